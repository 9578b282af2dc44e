"""Security intelligence above the gateway: anomaly detection, threat intel and scoring, trust,
alert rules, SIEM export, compliance reports and dashboard data.

Everything here is built from the audit log (``security.audit``), the one record of what the
gateway decided. The request path gets two gateway stages from :mod:`bastion.intelligence.setup`
(threat/anomaly assessment, then trust) between risk classification and approval;
``security/`` never imports this package.
"""
