"""HTTP adapter: FastAPI in front of the protocol-neutral core in `common/`."""
