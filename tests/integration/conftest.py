"""Integration fixtures: demo models trained once, and stacks of real processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.cards.publish import DrawnCard, draw_card
from common.training import DEMO_TYPES, TrainedModel, train_demo
from dev.rabbitmq import RabbitNode, vhost_url
from tests.browser import Chromium, chromium_or_skip
from tests.integration.stack import Stack, stack_fields
from tests.rabbitmq import rabbitmq_or_skip

pytestmark = pytest.mark.integration

_db_index = iter(range(1, 64))  # the session's Redis runs with 64 databases


@pytest.fixture
def redis_db_url(redis_url: str) -> str:
    """A database of the session's Redis of this test's own."""
    return f"{redis_url.rsplit('/', 1)[0]}/{next(_db_index)}"


@pytest.fixture(scope="session")
def demo_models() -> dict[str, TrainedModel]:
    return {model_type: train_demo(model_type) for model_type in DEMO_TYPES}


@pytest.fixture(scope="session")
def demo_cards(demo_models: dict[str, TrainedModel]) -> dict[str, DrawnCard]:
    """The demo models' cards, drawn once for every stack of the session."""
    return {
        model_type: draw_card(t.estimator, t.x_test, t.y_test, t.metadata)
        for model_type, t in demo_models.items()
    }


# Scans every file the session wrote for secrets, so it runs after every other test.
LAST_MODULE = "test_secrets_left_behind.py"


# The longest modules first: `--dist loadfile` hands modules out in this order, and a long
# one handed out last keeps its process busy while the other has nothing left to do.
SLOW_FIRST = (
    "test_schemathesis.py",
    "test_cross_host_faults.py",
    "test_worker_faults.py",
    "test_rollout.py",
    "test_redis_outage.py",
    "test_streaming_jobs.py",
    "test_callback_worker_faults.py",
    "test_make_run.py",
)


def _order(item: pytest.Item) -> int:
    name = item.path.name
    if name == LAST_MODULE:
        return len(SLOW_FIRST) + 1
    return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_order)  # stable: each module's tests keep their order
    last = [item for item in items if item.path.name == LAST_MODULE]
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: another runs in parallel
        # It stops every stack of its process, which later tests there would still use,
        # and cannot wait for the other process's files: make test runs it alone after.
        alone = pytest.mark.skip(reason=f"run {LAST_MODULE} alone, after the suite")
        for item in last:
            item.add_marker(alone)


@pytest.fixture(scope="session")
def rabbitmq(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RabbitNode, str] | None]:
    """With --broker=rabbitmq, the session's private RabbitMQ node and its URL: a vhost
    per stack, numbered as its Redis database (so its broadcasts, such as GET /'s worker
    ping, reach its own workers only). None with the default, Redis."""
    if request.config.getoption("--broker") != "rabbitmq":
        yield None
        return
    node, url = rabbitmq_or_skip(tmp_path_factory.mktemp("rabbitmq"), vhosts=64)
    yield node, url
    node.stop()


@pytest.fixture(scope="session")
def started_stacks() -> Iterator[list[Stack]]:
    """Every stack started in this session; whatever still runs at its end is stopped."""
    stacks: list[Stack] = []
    yield stacks
    for stack in reversed(stacks):
        stack.stop()


@pytest.fixture(scope="session")
def build_stack(
    redis_url: str,
    s3_endpoint: str,
    demo_models: dict[str, TrainedModel],
    demo_cards: dict[str, DrawnCard],
    tmp_path_factory: pytest.TempPathFactory,
    rabbitmq: tuple[RabbitNode, str] | None,  # before started_stacks: stopped after them
    started_stacks: list[Stack],
) -> Callable[..., Stack]:
    """Starts a stack with the demo models: its own Redis database (and RabbitMQ vhost
    with --broker=rabbitmq), bucket, queue, cache prefix and log file. Use make_stack in
    a test module (it stops its stacks at the module's end) or the shared `stack`; this
    one stops them only at the session's end."""

    def build(
        name: str,
        workers: int = 1,
        api_processes: int = 1,
        callback_workers: int = 0,
        **overrides: object,
    ) -> Stack:
        tmp = Path(tmp_path_factory.mktemp(name))
        index = next(_db_index)
        fields = stack_fields(name, redis_url, s3_endpoint, tmp, index)
        if rabbitmq is not None:  # the broker only: results and cache stay on Redis
            fields["broker_url"] = vhost_url(rabbitmq[1], index)
        fields |= overrides
        stack = Stack(name, fields, tmp)
        stack.publish_demo(demo_models, demo_cards)
        started_stacks.append(stack)
        return stack.start(workers, api_processes, callback_workers)

    return build


@pytest.fixture(scope="module")
def make_stack(build_stack: Callable[..., Stack]) -> Iterator[Callable[..., Stack]]:
    """`make_stack(name, workers=1, api_processes=1, callback_workers=0, **settings)`: a
    stack (a callback worker only where a test delivers callbacks) of the
    module's own, stopped (API, workers, and any Redis client they hold) at the module's
    end, so no stack of an earlier module runs, or reconnects to a Redis its test
    stopped, for the rest of the session."""
    built: list[Stack] = []

    def make(
        name: str,
        workers: int = 1,
        api_processes: int = 1,
        callback_workers: int = 0,
        **overrides: object,
    ) -> Stack:
        stack = build_stack(name, workers, api_processes, callback_workers, **overrides)
        built.append(stack)
        return stack

    yield make
    for stack in reversed(built):
        stack.stop()


@pytest.fixture(scope="session")
def stack(build_stack: Callable[..., Stack]) -> Stack:
    """The shared stack: one worker process with two prefork children; stopped at the
    session's end (by started_stacks); and a callback worker."""
    return build_stack("main", callback_workers=1)


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    """Headless Chromium that reaches no host but 127.0.0.1 (tests/browser.py); installed
    with apt-get when missing, the test skipped with the reason if it cannot be."""
    return chromium_or_skip()
