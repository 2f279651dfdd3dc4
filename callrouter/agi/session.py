"""One FastAGI call as the handler sees it: commands out, replies in, each under a
time-out, with Asterisk's HANGUP notice handled wherever it comes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias

from callrouter.agi.protocol import (
    HANGUP_NOTIFICATION,
    AgiCommandFailed,
    AgiError,
    AgiHangup,
    AgiProtocolError,
    AgiReply,
    AgiRequest,
    AgiTimeout,
    format_command,
    is_usage_end,
    parse_reply,
)

log = logging.getLogger("callrouter.agi.server")  # one logger for the FastAGI server

Handler: TypeAlias = Callable[["AgiSession"], Awaitable[None]]

# Reply lines can be long (GET VARIABLE of a long value); the environment has its own,
# smaller limit checked line by line in EnvironmentParser.
STREAM_LIMIT: Final = 64 * 1024
# How long a GET DATA reply may take beyond its digit time-out: the prompt plays first.
PROMPT_MARGIN: Final = 30.0
# The 520 usage text is a few lines; more is not Asterisk.
MAX_USAGE_LINES: Final = 200
# Leading upper-case words of a command are its name, logged; arguments may be PINs.
_VERB_RE: Final = re.compile(r"[A-Z][A-Z0-9_]*")


def shown(text: str, limit: int = 80) -> str:
    """A value from the peer, cut for a log line (the parser let no control
    characters through)."""
    return text if len(text) <= limit else text[:limit] + "..."


def peer_names(peer: object) -> tuple[str, str]:
    """The peer's address (what the per-source cap counts) and address:port (for logs)."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = str(peer[0]), peer[1]
        return host, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(peer), str(peer)


def _verb(words: tuple[str, ...]) -> str:
    name = []
    for word in words:
        if not _VERB_RE.fullmatch(word):
            break
        name.append(word)
    return " ".join(name) or "?"


class AgiSession:
    """One FastAGI connection: the request and a way to send commands.

    Commands run one at a time (a lock), each reply read within ``read_timeout``
    seconds or the ``timeout`` given.  A reply that does not come in time leaves the
    connection out of step (a late reply would answer the next command), so every
    later command fails at once with :class:`AgiTimeout`.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: AgiRequest,
        peer: str,
        *,
        read_timeout: float,
    ) -> None:
        self.request = request
        self.peer = peer
        self.hung_up = False  # set when Asterisk says the channel hung up
        # True once the server's channel check found the channel live on our Asterisk.
        self.channel_verified = False
        self.read_timeout = read_timeout
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()
        self._out_of_step = False
        self._closed = False  # end of stream seen
        self._hangup_sent = False

    def __repr__(self) -> str:
        return f"AgiSession({self.peer}, script={self.request.script!r}, {self.request.channel})"

    @property
    def _tag(self) -> str:
        return f"{self.peer} {self.request.uniqueid or self.request.channel}"

    # -- raw commands -------------------------------------------------------------

    async def command(self, *words: str, timeout: float | None = None) -> AgiReply:
        """Send one command and return its reply, whatever its code.

        Raises :class:`AgiHangup` on a ``511`` reply or end of stream,
        :class:`AgiTimeout` when no reply comes within ``timeout`` (default
        ``read_timeout``), :class:`AgiProtocolError` on a garbled reply, ValueError
        for CR/LF/NUL in a word.
        """
        data = format_command(*words)
        verb = _verb(words)
        async with self._lock:
            if self._closed:
                raise AgiHangup(f"{verb}: the AGI connection is closed")
            if self._out_of_step:
                raise AgiTimeout(f"{verb}: an earlier command got no clean reply; session unusable")
            if words[0].upper() == "HANGUP":
                self._hangup_sent = True
            log.debug("%s -> %s", self._tag, verb)
            wait = self.read_timeout if timeout is None else timeout
            try:
                # The drain is under the deadline too: a peer that stops reading
                # must not hold the call.
                async with asyncio.timeout(wait):
                    self._writer.write(data)
                    await self._writer.drain()
                    reply = await self._read_reply(verb)
            except ConnectionError as exc:
                self._closed = True
                raise AgiHangup(f"{verb}: connection lost ({exc})") from exc
            except TimeoutError:
                self._out_of_step = True
                raise AgiTimeout(f"{verb}: no reply within {wait:g} s") from None
            except (AgiProtocolError, asyncio.CancelledError):
                # The reply, or the rest of it, may still come and answer the next one.
                self._out_of_step = True
                raise
        log.debug("%s <- %s %s", self._tag, reply.code, verb)
        if reply.code == 511:
            self.hung_up = True
            raise AgiHangup(f"{verb}: {reply.code} {reply.text}")
        return reply

    async def _readline(self, verb: str) -> str:
        try:
            raw = await self._reader.readline()
        except ValueError:  # the line exceeded the stream limit
            raise AgiProtocolError(f"{verb}: reply line longer than {STREAM_LIMIT} bytes") from None
        except ConnectionError as exc:
            raw = b""
            log.debug("%s read failed: %s", self._tag, exc)
        if not raw.endswith(b"\n"):
            # b'' or a partial line: end of stream either way.
            self._closed = True
            self.hung_up = True
            raise AgiHangup(f"{verb}: connection closed by Asterisk")
        return raw.rstrip(b"\r\n").decode("utf-8", errors="replace")

    async def _read_reply(self, verb: str) -> AgiReply:
        while True:
            line = await self._readline(verb)
            if line == HANGUP_NOTIFICATION:
                # The channel hung up; the reply to our command still follows.
                log.debug("%s <- HANGUP notification", self._tag)
                self.hung_up = True
                continue
            reply = parse_reply(line)
            if not reply.multiline:
                return reply
            usage: list[str] = []
            for _ in range(MAX_USAGE_LINES):
                line = await self._readline(verb)
                if is_usage_end(line, reply.code):
                    return AgiReply(code=reply.code, data="\n".join(usage), text=reply.text)
                usage.append(line)
            raise AgiProtocolError(
                f"{verb}: {reply.code} usage longer than {MAX_USAGE_LINES} lines"
            )

    async def _checked(self, *words: str, timeout: float | None = None) -> AgiReply:
        """``command``, raising :class:`AgiCommandFailed` unless the code is 200."""
        reply = await self.command(*words, timeout=timeout)
        if reply.code != 200:
            verb = _verb(words)
            raise AgiCommandFailed(
                f"{verb} refused: {reply.code} {reply.text}", command=verb, reply=reply
            )
        return reply

    def _failed(self, verb: str, reply: AgiReply) -> AgiError:
        if self.hung_up:
            return AgiHangup(f"{verb}: result={reply.result} after the channel hung up")
        return AgiCommandFailed(f"{verb} failed: result={reply.result}", command=verb, reply=reply)

    # -- convenience ----------------------------------------------------------------

    async def answer(self) -> None:
        reply = await self._checked("ANSWER")
        if reply.result == "-1":
            raise self._failed("ANSWER", reply)

    async def stream_file(
        self, name: str, escape_digits: str = "", *, timeout: float | None = None
    ) -> str | None:
        """Play ``name``; the escape digit pressed, or None when it played to the end.

        Raises :class:`AgiCommandFailed` on ``result=-1`` (file missing, or playback
        failed), :class:`AgiHangup` if the channel hung up meanwhile.  The reply
        comes when playback ends: pass ``timeout`` for files longer than
        ``read_timeout`` + 30 s.
        """
        if timeout is None:
            timeout = self.read_timeout + PROMPT_MARGIN
        reply = await self._checked("STREAM", "FILE", name, escape_digits, timeout=timeout)
        code = _int_result("STREAM FILE", reply)
        if code < 0:
            raise self._failed("STREAM FILE", reply)
        return chr(code) if code > 0 else None

    async def get_data(
        self, prompt: str, timeout_ms: int, max_digits: int, *, timeout: float | None = None
    ) -> tuple[str, bool]:
        """Play ``prompt`` and collect up to ``max_digits`` digits.

        Returns the digits and whether Asterisk stopped waiting because of the time-out.
        Raises :class:`AgiHangup` on ``result=-1``.  The reply is awaited for
        ``timeout`` seconds, by default the digit time-out + ``read_timeout`` + 30 s
        for the prompt; pass more for prompts longer than that.
        """
        if timeout is None:
            # The reply comes after the prompt and the digit time-out: wait for both.
            timeout = timeout_ms / 1000 + self.read_timeout + PROMPT_MARGIN
        reply = await self._checked(
            "GET", "DATA", prompt, str(timeout_ms), str(max_digits), timeout=timeout
        )
        digits = reply.result or ""
        if digits == "-1":
            self.hung_up = True
            raise AgiHangup("GET DATA: result=-1 (channel hung up)")
        return digits, reply.data == "timeout"

    async def get_variable(self, name: str) -> str | None:
        """The channel variable's value, or None when it is not set."""
        reply = await self._checked("GET", "VARIABLE", name)
        if reply.result == "1":
            return reply.data if reply.data is not None else ""
        return None

    async def set_variable(self, name: str, value: str) -> None:
        await self._checked("SET", "VARIABLE", name, value)

    async def verbose(self, message: str, level: int = 1) -> None:
        await self._checked("VERBOSE", message, str(level))

    async def hangup(self) -> None:
        """Hang the channel up; Asterisk ends the AGI with the next command."""
        await self._checked("HANGUP")
        self.hung_up = True

    async def _hangup_quietly(self) -> None:
        """HANGUP at the end of a failed session, unless pointless; never raises."""
        if self.hung_up or self._hangup_sent or self._closed:
            return
        if self._out_of_step or self._lock.locked():
            # Replies no longer match commands: send it and don't wait for an answer.
            self._hangup_sent = True
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._writer.write(format_command("HANGUP"))
                await self._writer.drain()
            return
        try:
            await self.command("HANGUP")
        except (AgiError, ConnectionError) as exc:
            log.debug("%s HANGUP after failure not answered: %s", self._tag, exc)


def _int_result(verb: str, reply: AgiReply) -> int:
    try:
        return int(reply.result or "")
    except ValueError:
        raise AgiProtocolError(f"{verb}: result {reply.result!r} is not a number") from None
