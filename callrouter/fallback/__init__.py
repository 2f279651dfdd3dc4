"""The AstDB fallback: what the dialplan rings when no router is running.

``entries`` computes each user's dial string and timeout from the snapshot and the
rules (pure); ``astdb`` keeps Asterisk's AstDB in step with them over AMI.
"""
