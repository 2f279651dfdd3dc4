"""The users' own settings beside the admin's rules: their forwardings and switches
(API, web client, feature codes on the phone), stored in the directory database."""
