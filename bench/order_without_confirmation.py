"""`python -m bench.order_without_confirmation`: the order service with
`EventLog._confirm_events` doing nothing (scenario 10's baseline)."""

from order_service.event_log import EventLog


async def _not_confirmed(self: EventLog) -> None:
    return None


EventLog._confirm_events = _not_confirmed  # type: ignore[method-assign]

from order_service.app import main  # noqa: E402

main()
