"""In-process fakes of Asterisk's interfaces, for unit tests of the transports."""

from tests.fakes.fake_ari import FakeAri, RecordedRequest, make_bridge, make_channel, make_event

__all__ = ["FakeAri", "RecordedRequest", "make_bridge", "make_channel", "make_event"]
