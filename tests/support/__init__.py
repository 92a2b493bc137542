"""Real servers and helpers the tests start and stop: a DNS server, an SMTP
destination, the gateway as a subprocess."""
