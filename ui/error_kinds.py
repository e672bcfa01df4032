"""What each error kind the dispatcher records means, in plain words for the dashboard."""

from __future__ import annotations

from dispatcher.verdict import ErrorKind

PLAIN_WORDS: dict[ErrorKind, str] = {
    ErrorKind.TIMEOUT: "timed out: no complete answer in time",
    ErrorKind.CONNECT: "could not connect to the receiver",
    ErrorKind.DNS: "the host name does not resolve (DNS)",
    ErrorKind.REFUSED: "refused: the host resolves only to addresses hookpost may not send to",
    ErrorKind.TLS: "the TLS (https) handshake or certificate failed",
    ErrorKind.HTTP: "the receiver answered, but not with 2xx (or not with usable HTTP)",
    ErrorKind.PROXY: "the egress proxy could not be reached, or refused to connect to the "
                     "receiver",
    ErrorKind.CUT_OFF: "cut off: the dispatcher stopped while the request was out; the "
                       "receiver may have it",
    ErrorKind.UNKNOWN: "unknown: a dispatcher died holding the delivery; the receiver may "
                       "have it",
}


def in_plain_words(kind: str | None) -> str:
    """What an attempt's error kind means; empty for no error, the kind itself if new."""
    if kind is None:
        return ""
    try:
        return PLAIN_WORDS[ErrorKind(kind)]
    except ValueError:
        return kind
