"""The security layer: gateway pipeline, policy, approval, sandbox, audit, redaction."""
