"""How every consumer's subscriber is set up."""

from __future__ import annotations

from faststream._internal.utils.functions import to_async

from shared.consuming import subscriber_options


def test_the_batch_parser_and_decoder_run_on_the_event_loop() -> None:
    # FastStream wraps a plain function given as parser or decoder so that it runs in a
    # worker thread, once per batch; a coroutine it calls as it is.
    options = subscriber_options("test-group")
    for hook in ("parser", "decoder"):
        assert to_async(options[hook]) is options[hook], hook
