import smtplib

from tests.support.waiting import wait_until

MSG = b"From: a@mfa.gov.kz\r\nTo: x@example.com\r\nSubject: hi\r\n\r\nhello\r\n"


def test_message_from_system_is_queued_then_delivered(gateway, dest):
    with smtplib.SMTP("127.0.0.1", gateway.port) as c:
        c.ehlo("mail.mfa.gov.kz")
        code, text = c.docmd("MAIL FROM:<a@mfa.gov.kz>")
        assert code == 250
        c.rcpt("x@example.com")
        code, text = c.data(MSG)
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as ")
    queue_id = text.split()[-1].decode()
    wait_until(lambda: queue_id in dest.received_ids(), what="delivery")
    got = dest.messages[0]
    assert got.rcpt_tos == ["x@example.com"] and got.mail_from == "a@mfa.gov.kz"
    assert got.data.endswith(MSG)
