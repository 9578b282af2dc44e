"""Token formats the scanner knows (public formats documented by their issuers)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_B = r"(?<![A-Za-z0-9_])"  # start boundary that also treats '_' as a word char
_E = r"(?![A-Za-z0-9_])"


@dataclass(slots=True, frozen=True)
class Rule:
    """A named token format.

    ``keywords`` are literal substrings one of which every match contains; ``pattern`` only
    runs on texts that contain one (substring tests are far cheaper than regex scans).
    ``nocase`` rules are case-insensitive and anchored: ``pattern`` is matched at each
    occurrence of a keyword (found in the lower-cased text) that starts a word.
    """

    name: str
    regex: str
    keywords: tuple[str, ...]
    group: int = 0
    nocase: bool = False
    boundary: bool = False  # the match must not follow a letter, digit or '_'
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        flags = re.IGNORECASE if self.nocase else 0
        regex = self.regex
        if regex.startswith(_B):
            # A leading look-behind defeats the regex engine's literal-prefix search (5-10x
            # slower); the scanner checks the boundary itself instead.
            regex = regex[len(_B):]
            object.__setattr__(self, "boundary", True)
        object.__setattr__(self, "pattern", re.compile(regex, flags))


RULES: tuple[Rule, ...] = (
    Rule("aws_access_key_id", _B + r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)"
         r"[0-9A-Z]{16}" + _E,
         ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "APKA")),
    Rule("aws_secret_access_key",
         r"aws.{0,20}?(?:secret|sk).{0,20}?['\"=:\s]\s*([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
         ("aws",), group=1, nocase=True),
    Rule("github_token", _B + r"gh[pousr]_[A-Za-z0-9]{36,255}" + _E,
         ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    Rule("github_fine_grained", _B + r"github_pat_[A-Za-z0-9_]{60,255}", ("github_pat_",)),
    Rule("gitlab_token", _B + r"(?:gl(?:pat|dt|ptt|rt|soat|ffct|cbt|imt|agent|oas)-|GR1348941)"
         r"[A-Za-z0-9_-]{20,}", ("glpat-", "gldt-", "glptt-", "glrt-", "glsoat-", "glffct-",
                                 "glcbt-", "glimt-", "glagent-", "gloas-", "GR1348941")),
    # Slack: xox[bpaors]-<team/user ids>-<secret>, rotating xoxe.xoxp-1-..., app-level xapp-1-...
    Rule("slack_token", _B + r"(?:xox[abposre](?:\.xox[bp])?-\d+-[A-Za-z0-9-]{8,}"
         r"|xapp-\d-[A-Za-z0-9-]{10,})(?![A-Za-z0-9#*-])", ("xox", "xapp-")),
    Rule("slack_webhook", r"hooks\.slack\.com/(?:services|workflows|triggers)/"
         r"[A-Za-z0-9_/+-]{20,}", ("hooks.slack",)),
    Rule("openai_key", _B + r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}", ("sk-",)),
    Rule("anthropic_key", _B + r"sk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{80,}", ("sk-ant-",)),
    Rule("huggingface_token", _B + r"(?:hf_|api_org_)[A-Za-z]{34}" + _E, ("hf_", "api_org_")),
    Rule("google_api_key", _B + r"AIza[0-9A-Za-z_-]{35}" + _E, ("AIza",)),
    Rule("google_oauth_secret", _B + r"GOCSPX-[A-Za-z0-9_-]{28}", ("GOCSPX-",)),
    # Secret and restricted keys; publishable keys (pk_) are public by design.
    Rule("stripe_key", _B + r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}", ("_live_", "_test_")),
    Rule("mailchimp_key", _B + r"[0-9a-f]{32}-us\d{1,2}" + _E, ("-us",)),
    Rule("azure_client_secret", _B + r"[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34}"
         r"(?![A-Za-z0-9_~.-])", ("Q~",)),
    Rule("twilio_key", _B + r"SK[0-9a-f]{32}" + _E, ("SK",)),
    Rule("sendgrid_key", _B + r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}", ("SG.",)),
    Rule("npm_token", _B + r"npm_[A-Za-z0-9]{36}" + _E, ("npm_",)),
    Rule("pypi_token", _B + r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}", ("pypi-",)),
    Rule("digitalocean_token", _B + r"do[opr]_v1_[a-f0-9]{64}", ("_v1_",)),
    Rule("shopify_token", _B + r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}", ("shp",)),
    Rule("azure_storage_key", r"AccountKey=([A-Za-z0-9+/]{86}==)", ("AccountKey=",), group=1),
    Rule("telegram_bot_token", _B + r"\d{8,10}:AA[A-Za-z0-9_-]{33}", (":AA",)),
    # The signature may be empty (``alg: none`` tokens are still bearer credentials).
    Rule("jwt", _B + r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", ("eyJ",)),
    Rule("private_key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?!-----END)[\s\S]*?"
         r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)", ("-----BEGIN",)),
    Rule("age_secret_key", r"AGE-SECRET-KEY-1[0-9A-Z]{58}", ("AGE-SECRET-KEY-",)),
    Rule("vault_token", _B + r"hv[sbr]\.[A-Za-z0-9_-]{24,}", ("hvs.", "hvb.", "hvr.")),
    # Bundler's gem-source credentials: BUNDLE_<HOST with __ for .>=user:password
    Rule("bundler_credentials", r"BUNDLE_[A-Z0-9_]*__[A-Z0-9_]+[\"']?\s*[=:]\s*[\"']?"
         r"[^\s:\"']+:([^\s\"';]{3,})", ("BUNDLE_",), group=1),
    Rule("url_password", r"://[^/\s:@\"']+:([^/\s@\"']{3,})@", ("://",), group=1),
    Rule("bearer_token", r"(?:bearer|token)\s+([A-Za-z0-9._~+/-]{16,}=*)", ("bearer", "token"),
         group=1, nocase=True),
    Rule("basic_auth", r"basic\s+([A-Za-z0-9+/]{8,}={0,2})", ("basic",), group=1, nocase=True),
)

# ``password = "..."`` / ``api_key: ...`` / ``"client_secret": "..."``: the value after an
# identifier that names a secret (covers passwords of any shape, which no format rule can). The
# scanner finds these keywords by substring search, takes the whole identifier around each and
# asks :func:`bastion.security._scanner_context.names_secret` about it.
ASSIGNMENT_KEYWORDS = ("pass", "secret", "key", "token", "pw", "auth", "cred")
