"""What the API and the worker agree on: task names and the result channel.

The API enqueues by name, so it never imports the worker or any ML library.
"""

PREDICT_TASK = "serving.predict"
PREDICT_CHUNK_TASK = "serving.predict_chunk"
CALLBACK_TASK = "serving.deliver_callback"
PREPARE_JOB_TASK = "serving.prepare_job"
# Readiness: a round trip through a queue proves a worker consumes, not only lives.
PING_TASK = "serving.ping"

# Celery's Redis result backend stores and publishes each result under this prefix.
RESULT_KEY_PREFIX = "celery-task-meta-"
