"""The protocol-neutral core, as services with one job each: models (the catalog and its
administration), predictions, and jobs. Front ends (HTTP today) parse their own request
shapes into the typed requests these take, and call only their methods."""
