"""Presence: each user's phone status and client status, merged across devices.

``model`` (the states and how they merge) and ``tracker`` (who owns which device,
what changed) are pure; ``live`` feeds the tracker from Asterisk (AMI) and publishes
each user's merged state back as a custom device state and presence state.
"""
