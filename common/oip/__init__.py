"""The Open Inference Protocol (KServe's "v2"), protocol-neutral: requests' tensors read
into the rows `/predict` takes, responses' outputs, and metadata. api/routes/v2.py is
its HTTP front end."""
