"""The mail path: ingress (SMTP in), spool (durable queue), delivery (SMTP
out), DKIM signing and delivery status notifications."""
