"""Test and demo harness: a real Asterisk in a Debian sid chroot, plus simulated SIP phones.

Not part of the installed ``callrouter`` package. ``sandbox.asterisk`` builds and runs the
sandbox Asterisk (see ``/work/shared/ASTERISK.md`` for the measured facts it relies on);
``sandbox.phones`` simulates SIP phones on loopback UDP for the end-to-end tests,
the demo and the benchmarks.
"""
