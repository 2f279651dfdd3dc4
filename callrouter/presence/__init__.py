"""Presence: each user's phone status and client status, merged across devices.

The states and how they merge are domain values (``callrouter.domain.presence``);
``tracker`` (who owns which device, what changed) is pure; ``live`` feeds the
tracker from Asterisk (AMI) and publishes each user's merged state back as a custom
device state and presence state; ``shared`` keeps client statuses in the directory
database, so every router sharing it merges the same ones; ``build`` wires it to the
live directory and, on PostgreSQL, to the change feed.
"""
