"""Every SMTP reply the gateway gives a client, named, in one place.

Search here for a code ("450 4.7.1") to find what decides it: each constant is
used at exactly the point where that decision is made. Texts are generic to
strangers and never name internal hosts or other systems' limits.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    text: str

    def format(self, **values: object) -> str:
        code = f"{self.code} {self.enhanced}" if self.enhanced else str(self.code)
        return f"{code} {self.text.format(**values)}"

    def __str__(self) -> str:
        return self.format()

    @property
    def permanent(self) -> bool:
        return self.code >= 500


# Success
QUEUED = Reply(250, "2.0.0", "Ok: queued as {queue_id}")
SENDER_OK = Reply(250, "2.1.0", "Ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Ok")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")  # 3xx: no enhanced code (RFC 2034)

# Who may relay (decided in relay/policy.py)
RELAY_DENIED = Reply(550, "5.7.1", "Relaying denied: this client is not a connected mail system")
SENDER_DOMAIN_DENIED = Reply(
    550, "5.7.1", "Sender domain {domain} is not registered for mail system {system}"
)
ADDRESS_FORM_DENIED = Reply(
    553, "5.1.3", "Address form not accepted: {why}"
)
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")

# Suspension and restriction (decided in relay/ingress.py from blocklist_guard's
# records).
# A 4xx, not a 5xx: the message stays in the system's own queue, nothing is lost.
SUSPENDED = Reply(
    450, "4.7.1",
    "Mail system {system} is suspended since {since} ({why}); your mail waits in your own "
    "queue. Status: {url}",
)
# One sender of a system restricted: named, not its system, whose other
# senders' mail flows.
RESTRICTED = Reply(
    450, "4.7.1",
    "Sender {sender} is restricted since {since} ({why}); the message waits in your own "
    "queue. Status: {url}",
)

# Limits (decided in relay/ingress.py)
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients; send the rest in another message")
MESSAGE_TOO_LARGE = Reply(552, "5.3.4", "Message exceeds the size limit of {limit}")  # "25 MiB"
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections; try again later")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors; closing connection")
SESSION_TOO_LONG = Reply(421, "4.4.2", "Session time limit reached; closing connection")
IDLE_TIMEOUT = Reply(421, "4.4.2", "Idle timeout; closing connection")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down; try again later")

# Bad input (decided in relay/linecheck.py and relay/ingress.py)
BARE_LINE_ENDING_COMMAND = Reply(
    500, "5.5.2", "Syntax error: command lines must end with CRLF (bare CR or LF received)"
)
BARE_LINE_ENDING_DATA = Reply(
    550, "5.6.2", "Message rejected: bare CR or LF in message data; lines must end with CRLF"
)
NUL_IN_DATA = Reply(550, "5.6.2", "Message rejected: NUL (zero byte) in message data")
CONTROL_CHARACTERS = Reply(501, "5.5.2", "Syntax error: control characters are not allowed")
NON_ASCII = Reply(553, "5.6.7", "Non-ASCII in commands or addresses is not accepted (no SMTPUTF8)")
BAD_HELO = Reply(501, "5.5.2", "Syntax error: invalid HELO/EHLO hostname")

# The SMTP dialogue. aiosmtpd decides these and writes them without an enhanced
# code; relay/smtp_edge.py (AIOSMTPD_REFUSALS) sends ours instead. Codes as
# RFC 3463 and Postfix use them: 5.5.1 out of sequence or not implemented,
# 5.5.2 a command not understood, 5.5.4 arguments not accepted.
NEED_HELO = Reply(503, "5.5.1", "Error: send {command} first")
NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Error: already authenticated")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Error: command not implemented")
BAD_SYNTAX = Reply(500, "5.5.2", "Error: bad syntax")
UNRECOGNIZED_COMMAND = Reply(500, "5.5.2", "Error: command not recognized")
SYNTAX = Reply(501, "5.5.4", "Syntax: {usage}")
AUTH_SYNTAX = Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
NO_HELP = Reply(501, "5.5.4", "No help for that; supported commands: {commands}")
BAD_BODY = Reply(501, "5.5.4", "Error: BODY can only be one of 7BIT, 8BITMIME")
NO_SMTPUTF8 = Reply(501, "5.5.4", "Error: SMTPUTF8 is not offered")
UNKNOWN_MAIL_PARAMETERS = Reply(
    555, "5.5.4", "MAIL FROM parameters not recognized or not implemented"
)
UNKNOWN_RCPT_PARAMETERS = Reply(
    555, "5.5.4", "RCPT TO parameters not recognized or not implemented"
)
MALFORMED_ADDRESS = Reply(553, "5.1.3", "Error: malformed address")
VRFY_MALFORMED = Reply(502, "5.1.3", "Could not VRFY: malformed address")
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available")
ENCRYPTION_REQUIRED = Reply(
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)
UNKNOWN_AUTH_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_ABORTED = Reply(501, "5.7.0", "Authentication aborted")
BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode base64")
BAD_AUTH_VALUE = Reply(501, "5.5.2", "Cannot split the authentication value")

# Storage (decided in relay/spool.py's callers in relay/ingress.py)
INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage; try again later")
STORE_FAILED = Reply(451, "4.3.0", "Temporary failure storing the message; try again later")
INTERNAL_ERROR = Reply(451, "4.3.0", "Temporary internal error; try again later")
