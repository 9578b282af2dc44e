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
    # ``sk-ant-`` is Anthropic's prefix, with its own format (next rule): not an OpenAI key
    Rule("openai_key", _B + r"sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}", ("sk-",)),
    Rule("anthropic_key", _B + r"sk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{80,}", ("sk-ant-",)),
    Rule("huggingface_token", _B + r"(?:hf_|api_org_)[A-Za-z]{34}" + _E, ("hf_", "api_org_")),
    Rule("google_api_key", _B + r"AIza[0-9A-Za-z_-]{35}" + _E, ("AIza",)),
    Rule("google_oauth_secret", _B + r"GOCSPX-[A-Za-z0-9_-]{28}", ("GOCSPX-",)),
    # Secret and restricted keys; publishable keys (pk_) are public by design.
    Rule("stripe_key", _B + r"(?:sk|rk)_(?:live|test|prod)_[A-Za-z0-9]{16,}",
         ("_live_", "_test_", "_prod_")),
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
    # A private key's DER in base64 without PEM lines (PKCS#8 RSA/EC/Ed25519, PKCS#1 RSA,
    # SEC1 EC), as it sits in env vars and JSON
    Rule("private_key_der", r"(?<![A-Za-z0-9+/])(?:MII[A-Za-z0-9+/]{3}(?:IBADANBgkqhkiG9w0BAQEFAAS"
         r"|IBAAK)|MIG[A-Za-z0-9+/]AgEAM[A-Za-z0-9+/]{2}GByqGSM49|MC4CAQAwBQYDK2Vw|MHcCAQEEI"
         r"|MIGkAgEBBDA|MIHcAgEBBEI)[A-Za-z0-9+/]{40,}={0,2}", ("MII", "MHcCAQ", "MC4CAQ")),
    Rule("cloudflare_origin_ca_key", _B + r"v1\.0-[a-f0-9]{24}-[a-f0-9]{146}" + _E, ("v1.0-",)),
    Rule("age_secret_key", r"AGE-SECRET-KEY-1[0-9A-Z]{58}", ("AGE-SECRET-KEY-",)),
    Rule("vault_token", _B + r"hv[sbr]\.[A-Za-z0-9_-]{24,}", ("hvs.", "hvb.", "hvr.")),
    # Bundler's gem-source credentials: BUNDLE_<HOST with __ for .>=user:password
    Rule("bundler_credentials", r"BUNDLE_[A-Z0-9_]*__[A-Z0-9_]+[\"']?\s*[=:]\s*[\"']?"
         r"[^\s:\"']+:([^\s\"';]{3,})", ("BUNDLE_",), group=1),
    Rule("dynatrace_token", _B + r"dt0c01\.[A-Z0-9]{24}\.[A-Z0-9]{64}" + _E, ("dt0c01.",)),
    Rule("terraform_token", r"[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9=_-]{60,70}", (".atlasv1.",)),
    # user:password@ in a URL; the user may be empty (``redis://:password@host``)
    Rule("url_password", r"://[^/\s:@\"']*:([^/\s@\"']{3,})@", ("://",), group=1),
    # .netrc: ``machine HOST login USER password PASSWORD`` (no operator)
    Rule("netrc_password", r"machine[ \t]+\S+\s+login\s+\S+(?:\s+(?:account|port)\s+\S+)?"
         r"\s+password[ \t]+([^\s\"']{3,})", ("machine",), group=1, nocase=True),
    # An access (key) id: the public half of an id/secret pair that some issuers treat as a
    # credential (like AWS's AKIA... ids): Sumo Logic, Alibaba, Tencent, Backblaze, MinIO ...
    Rule("access_id", r"access[_.-]?(?:key[_.-]?)?id[\"']?[ \t]*(?::{1,3}=|[:=])[ \t]*[\"'`]?"
         r"((?=[A-Za-z]*[0-9])(?=[0-9]*[A-Za-z])[A-Za-z0-9]{12,40})(?![A-Za-z0-9_/+=.-])",
         ("access",), group=1, nocase=True),
    # An Authorization header with any scheme (SSWS, OAuth, ApiKey, Splunk, ...)
    Rule("authorization_header", r"authorization[\"']?[ \t]*[:=][ \t]*[\"']?[A-Za-z][\w-]{1,20}"
         r"[ \t]+([A-Za-z0-9._~+/-]{8,}=*)", ("authorization",), group=1, nocase=True),
    # Passwords on a command line: sshpass -p, mysql -pPASSWORD, docker/podman/helm login -p,
    # redis-cli -a, htpasswd -b FILE USER PASSWORD, echo PASSWORD | ... --password-stdin
    Rule("cli_password", r"sshpass[ \t]+(?:-\w+[ \t]+)*?-p[ \t]*[\"']?([^\s\"']{4,})",
         ("sshpass",), group=1),
    Rule("cli_password", r"(?:mysql|mariadb)\w*\b[^\n|;&]*?[ \t]-p([^\s\"'-][^\s\"']{3,})",
         ("mysql", "mariadb"), group=1),
    Rule("cli_password", r"(?:docker|podman|nerdctl|helm[ \t]+registry) login\b[^\n|;&]*?"
         r"[ \t](?:-p|--password)(?:[ \t]+|=)[\"']?([^\s\"']{4,})",
         (" login",), group=1),  # one literal: an alternation of four is ~10x slower
    Rule("cli_password", r"redis-cli\b[^\n|;&]*?[ \t]-a[ \t]+[\"']?([^\s\"']{4,})",
         ("redis-cli",), group=1),
    Rule("cli_password", r"htpasswd[ \t]+-\w*b\w*[ \t]+(?:-\w+[ \t]+)*\S+[ \t]+\S+[ \t]+"
         r"[\"']?([^\s\"']{4,})", ("htpasswd",), group=1),
    Rule("cli_password_stdin", r"(?:echo|printf)[ \t]+[\"']?([^\s\"'$|]{4,})[\"']?[ \t]*\|[^\n]*"
         r"--password-stdin", ("--password-stdin",), group=1),
    # ``-u USER -p PASSWORD`` (psexec, sqlcmd -U/-P, ...), not mysql's ``-p`` (with a space it
    # prompts, and the next word is the database)
    Rule("cli_password", r"(?m)^(?![^\n]*\b(?:mysql|mariadb|mysqldump)\b)[^\n]*?[ \t]-[uU]"
         r"[ \t]+[\"']?[^\s\"'-][^\s\"']*[\"']?[ \t]+-[pP][ \t]+[\"']?([^\s\"'$%-][^\s\"']{3,})",
         (" -p ", " -P "), group=1),
    # PowerShell's ``-Password VALUE`` (Connect-VIServer, New-LocalUser, ...)
    Rule("cli_password", r"[ \t]-[Pp]assword[ \t]+[\"']?([^\s\"'$(%-][^\s\"']{3,})",
         (" -Password", " -password"), group=1),
    # A credential object built from two string literals (user, password) or, for an LDAP
    # entry, three (path, user, password); requests' ``auth=("user", "password")``
    Rule("call_password", r"(?:NetworkCredential|PasswordAuthentication|HTTPBasicAuth"
         r"|HTTPDigestAuth|UsernamePasswordCredentials?|auth[ \t]*=[ \t]*)\([ \t]*"
         r"@?[\"'][^\"'\n]{1,200}[\"'][ \t]*,[ \t]*@?[\"']([^\"'\n]{4,100})[\"']",
         ("Credential", "Authentication", "BasicAuth", "DigestAuth", "auth=", "auth ="),
         group=1),
    Rule("call_password", r"DirectoryEntry\([ \t]*(?:@?\"[^\"\n]*\"[ \t]*,[ \t]*){2}"
         r"@?\"([^\"\n]{4,100})\"", ("DirectoryEntry",), group=1),
    # Prose: ``the password is "centipede"``, ``the default password for user 'x' is 'y'``
    Rule("prose_password", r"password\b[^\n.;:=\"']{0,40}(?:[\"'][^\"'\n]{1,40}[\"'][^\n.;:=\"']"
         r"{0,10})?\bis[ \t]+[\"']([^\"'\n]{4,64})[\"']", ("password",), group=1, nocase=True),
    # SonarQube's login token given to ``sonar.login`` (its older format: 40 hex characters)
    Rule("sonar_token", r"(?i:sonar[._]?login)[\"']?[ \t]*(?:[,:=][ \t]*)?[\"']?([0-9a-f]{40})"
         r"(?![0-9a-f])", ("sonar.login", "sonarLogin", "sonar_login", "SONAR_LOGIN"), group=1),
    # Microsoft Teams incoming webhooks (the URL is the credential)
    Rule("teams_webhook", r"(?:outlook\.office(?:365)?\.com/webhook"
         r"|\.webhook\.office\.com/webhookb2)/[0-9a-f-]{36}@[0-9a-f-]{36}/IncomingWebhook/[0-9a-f]{32}/[0-9a-f-]{36}",
         ("/webhook",)),
    # New Relic license keys (40 characters ending in NRAL, the EU ones starting eu01xx)
    Rule("newrelic_license", _B + r"(?:eu01xx[a-f0-9]{30}|[a-f0-9]{36})NRAL" + _E, ("NRAL",)),
    Rule("bearer_token", r"(?:bearer|token)\s+([A-Za-z0-9._~+/-]{16,}=*)", ("bearer", "token"),
         group=1, nocase=True),
    Rule("basic_auth", r"basic\s+([A-Za-z0-9+/]{8,}={0,2})", ("basic",), group=1, nocase=True),
)

# ``password = "..."`` / ``api_key: ...`` / ``"client_secret": "..."``: the value after an
# identifier that names a secret (covers passwords of any shape, which no format rule can). The
# scanner finds these keywords by substring search, takes the whole identifier around each and
# asks :func:`bastion.security._scanner_context.names_secret` about it.
ASSIGNMENT_KEYWORDS = ("pass", "secret", "key", "token", "pw", "auth", "cred", "psk")


# Prefixed tokens whose body is hex or one case (a shape the entropy guess leaves alone), as
# their issuers document them (rubygems, shippo, brevo, postman, sonarqube, databricks,
# grafana, planetscale, duffel, flutterwave, sourcegraph, new relic, clojars, adobe, pulumi,
# readme, prefect, perplexity, sentry, frame.io, scalingo, jfrog, typeform, 1password,
# facebook, atlassian, mailgun, nuget, twitch). Each is one run of token characters starting
# with its prefix: the scanner tries them only where such a run starts with one of
# ``VENDOR_PREFIXES`` (one ``startswith`` per run it already visits), never with a search over
# the whole text.
VENDOR_PREFIXES = (
    "rubygems_", "shippo_", "xkeysib-", "PMAK-", "sqp_", "sqa_", "squ_", "dapi", "glsa_",
    "glc_", "pscale_", "duffel_", "FLWSECK", "FLWPUBK", "sgp_", "NRAK-", "NRII-", "NRJS-",
    "CLOJARS_", "p8e-", "pul-", "rdme_", "pnu_", "pplx-", "sntryu_", "sntrys_", "fio-u-",
    "tk-us-", "AKCp", "tfp_", "ops_eyJ", "EAAM", "EAAC", "ATATT3", "NRIQ-", "NRRA-", "NRAA-",
    "key-", "oy2", "live_")
VENDOR_TOKEN = re.compile(
    r"(?:"
    r"rubygems_[a-f0-9]{48}"
    r"|shippo_(?:live|test)_[a-fA-F0-9]{40}"
    r"|xkeysib-[a-f0-9]{64}-[A-Za-z0-9]{16}"
    r"|PMAK-[a-fA-F0-9]{24}-[a-fA-F0-9]{34}"
    r"|sq[pau]_[a-fA-F0-9]{40}"
    r"|dapi[a-fA-F0-9]{32}(?:-\d)?"
    r"|(?:glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}|glc_[A-Za-z0-9+/]{32,400}={0,2})"
    r"|pscale_(?:tkn|pw|oauth)_[A-Za-z0-9=._-]{32,64}"
    r"|duffel_(?:test|live)_[A-Za-z0-9_=-]{43}"
    r"|FLW(?:SEC|PUB)K_TEST-[a-hA-H0-9]{32}-X"
    r"|sgp_(?:[a-fA-F0-9]{16}|local)_[a-fA-F0-9]{40}"
    r"|NR(?:AK|II|JS|IQ|RA|AA)-[A-Za-z0-9_-]{19,42}"
    r"|key-[0-9a-f]{32}"  # Mailgun
    r"|oy2[a-z0-9]{43}"  # NuGet
    r"|live_\d{6,12}_[A-Za-z0-9]{30}"  # Twitch stream keys
    r"|CLOJARS_[a-z0-9]{60}"
    r"|p8e-[A-Za-z0-9]{32}"
    r"|pul-[a-f0-9]{40}"
    r"|rdme_[a-z0-9]{70}"
    r"|pnu_[A-Za-z0-9]{36}"
    r"|pplx-[A-Za-z0-9]{48}"
    r"|(?:sntryu_[a-f0-9]{64}|sntrys_eyJ[A-Za-z0-9+/=_-]{80,})"
    r"|fio-u-[A-Za-z0-9_=-]{64}"
    r"|tk-us-[A-Za-z0-9_-]{48}"
    r"|AKCp[A-Za-z0-9]{69}"
    r"|tfp_[A-Za-z0-9_.=-]{59}"
    r"|ops_eyJ[A-Za-z0-9+/]{250,}={0,3}"
    r"|EAA[MC][A-Za-z0-9]{100,}"
    r"|ATATT3[A-Za-z0-9_=-]{186}"
    r")(?![A-Za-z0-9_])")
