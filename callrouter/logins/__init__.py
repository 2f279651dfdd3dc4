"""Workplace logins (hot desking): who sits where, by phone, by client or by the admin.

``policy`` (may this user sit here?), ``lockout`` (too many wrong PINs) and
``autologout`` (when forgotten logins end) are pure; ``service`` carries them out
against the directory database; ``feature_codes`` is the phone's way in (FastAGI).
"""
