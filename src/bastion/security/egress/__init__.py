"""Per-sandbox egress control: a network namespace, nftables default-drop and a DNS allowlist."""
