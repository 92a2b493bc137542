"""mailgw: SMTP relay of the e-government email gateway."""

__version__ = "0.1.0"
