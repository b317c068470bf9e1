"""From alarm to action (issue 25): what leaves the regulator for people and other platforms.

outbox.py is the seam every sender writes through: a row per message to one recipient on one
channel, inserted in the transaction that decided it (an incident opened, an escalation step
due, a work order overdue, a weekly report made), so a message is never decided and then lost,
and a decision replayed (the same key) is one message. Delivery reads the outbox, never the
ledger.
"""
