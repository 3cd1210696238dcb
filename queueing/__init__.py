"""The queue between the front ends and the workers, used by both sides.

Celery's configuration and codec (`config`, `codec`), the task names and one typed
message per task kind (`messages`), publishing (`dispatcher`), and awaiting and decoding
results (`listener`, `results`). It imports neither FastAPI nor any model library.
"""
