"""Workplace logins (hot desking): who sits where, by phone, by client or by the admin.

``policy`` (may this user sit here?) and ``autologout`` (when forgotten logins end)
are pure; ``lockout`` counts wrong PINs, in memory or in the directory database;
``store`` writes the login state to the directory database, one audited transaction
per change; ``service`` puts them together, and every way in goes through it;
``feature_codes`` is the phone's way in (FastAGI).
"""
