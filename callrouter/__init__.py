"""callrouter: routes calls to people, not phones, beside Asterisk."""

__version__ = "0.1.0"
