"""`python -m bench.order_without_confirmation`: the order service without the confirmation of
numbered events (`EventLog._confirm_events` does nothing: what it numbers is never shown
while a synchronous standby is configured), so that scenario 10 measures what the
confirmation costs beside the service as it is, in one run."""

from order_service.event_log import EventLog


async def _not_confirmed(self: EventLog) -> None:
    return None


EventLog._confirm_events = _not_confirmed  # type: ignore[method-assign]

from order_service.app import main  # noqa: E402

main()
