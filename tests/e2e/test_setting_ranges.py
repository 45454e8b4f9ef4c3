"""Every variable of README's configuration table, given a bad value, stops the real service
process before it serves: exit code 2 and one line naming the variable and the value (no
traceback). The database is unreachable on purpose: a bad value the service missed shows as
a start that does not end this way."""

import asyncio
import sys

import pytest

from tests.configuration_table import BAD_VALUES, FREE_FORM, HEALTHCHECK, Bad, table_rows
from tests.e2e.conftest import local_only
from tests.e2e.stack import service_env

pytestmark = local_only("starts each service as a host process to see it refuse a bad value")

# Nothing listens there; connect_timeout keeps a start that got that far short.
UNREACHABLE = "postgresql://127.0.0.1:9/exchange?connect_timeout=1"
# Starts at once on two shared cores: enough to keep the walk short, few enough not to starve.
CONCURRENT_STARTS = 3
START_TIMEOUT_SECONDS = 60.0


def test_every_variable_of_the_table_has_a_bad_value_or_a_reason_it_has_none() -> None:
    walked = {bad.variable for bad in BAD_VALUES}
    assert walked.isdisjoint(FREE_FORM)
    assert walked | set(FREE_FORM) == set(table_rows())


async def start(bad: Bad, module: str) -> str | None:
    """What is wrong with how `module` refused `bad`, or None when it refused it as it must."""
    env = service_env(UNREACHABLE, "production", {**bad.extra, bad.variable: bad.value})
    argv = [sys.executable, "-m", module] + (["127.0.0.1:9"] if module == HEALTHCHECK else [])
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), START_TIMEOUT_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        return f"did not stop within {START_TIMEOUT_SECONDS:g} s"
    text = output.decode(errors="replace")
    lines = text.splitlines()
    prefix = "127.0.0.1:9" if module == HEALTHCHECK else module
    fragment = bad.expected_fragment
    if (
        process.returncode != 2
        or len(lines) != 1
        or not lines[0].startswith(f"{prefix}: configuration error: ")
        or bad.variable not in lines[0]
        or (fragment is not None and fragment not in lines[0])
        or (fragment is None and bad.value in lines[0])
    ):
        return f"exit code {process.returncode}, output:\n{text[-1500:]}"
    return None


# About 70 process starts, three at a time, on a loaded machine.
@pytest.mark.timeout(900)
async def test_a_bad_value_of_any_variable_stops_the_service_naming_the_variable_and_value() -> (
    None
):
    gate = asyncio.Semaphore(CONCURRENT_STARTS)

    async def check(bad: Bad, module: str) -> str | None:
        async with gate:
            problem = await start(bad, module)
        return None if problem is None else f"{module} {bad.variable}={bad.value!r}: {problem}"

    cases = [(bad, module) for bad in BAD_VALUES for module in bad.modules]
    results = await asyncio.gather(*(check(bad, module) for bad, module in cases))

    problems = [result for result in results if result is not None]
    assert problems == [], "\n".join(problems)
    assert len(cases) >= 60
