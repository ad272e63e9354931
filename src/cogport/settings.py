"""The one settings object, read from ``COGPORT_*`` environment variables.

Nothing else in the package reads ``os.environ`` for configuration: the object is built once (by
the CLI, or by a test) and passed to :func:`cogport.app.create_app`. Nested groups use a double
underscore, e.g. ``COGPORT_RUNTIME__IDLE_TIMEOUT=300``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class HardwareSku(BaseModel):
    """A hardware SKU an operator adds to what is detected."""

    sku: str
    name: str


class GpuSpec(BaseModel):
    """A GPU the installation may use (``COGPORT_GPUS``)."""

    index: int | None = None
    """The device index ``CUDA_VISIBLE_DEVICES`` names; default: its position in the list."""
    name: str
    uuid: str | None = None
    memory_mb: int | None = None


class BuildSettings(BaseModel):
    """How model versions are built (issue 3)."""

    cog_version: str = "0.23.1"
    allow_run_commands: bool = False
    """Run ``build.run`` / ``build.pre_install`` from cog.yaml. Off: such a cog.yaml is refused."""
    python_search_paths: list[Path] = Field(default_factory=list)
    """Extra directories holding ``pythonX.Y`` interpreters, searched before uv's discovery."""
    timeout: float = 1800.0
    venvs_dir: Path | None = None
    """Where model environments live (uv venvs, shared by versions with the same requirements).
    Unset: ``<data_dir>/venvs``."""
    uv_cache_dir: Path | None = None
    """uv's package cache, shared by every build. Unset: ``$UV_CACHE_DIR`` when set, else ``<data_dir>/cache/uv``."""
    prefer_offline: bool = True
    """Install a new venv from the uv cache alone when it holds every package (fast, and immune to index
    outages; unpinned dependencies then get the cached release), else resolve against the index."""
    concurrency: int = Field(default=2, ge=1)
    """Builds one server process runs at the same time."""
    max_source_mb: int = 2048
    """The largest model directory a push may unpack to."""
    examples_dir: Path | None = None
    """Where the example models are (``register_examples``). Unset: those shipped in the package (the
    ``examples/`` folder of the checkout when running from one)."""
    examples: list[str] = Field(default_factory=lambda: ["hello-world"])
    """The examples registered as public ``examples/<name>`` models on first start."""


class RuntimeSettings(BaseModel):
    """The local runtime that supervises coglet instances (issue 4)."""

    idle_timeout: float = 300.0
    """Seconds an instance stays warm without work before it is stopped."""
    max_instances: int = 8
    max_instances_per_version: int = 1
    """Instances of one version (and mode) at once; later jobs of the version wait for a slot.
    0 means only ``max_instances`` bounds them. 1 by default: two copies of a GPU model rarely fit."""
    max_memory_mb: int = 0
    """Total resident memory of all instances; 0 means no bound."""
    setup_timeout: float = 600.0
    """Seconds ``setup()`` may take (``COG_SETUP_TIMEOUT``) before the start counts as failed."""
    setup_attempts: int = Field(default=3, ge=1)
    """Consecutive failed starts of a version before its queued predictions fail with the setup error."""
    start_backoff_initial: float = 1.0
    """Seconds before restarting a version whose instance failed to start; doubles up to ``start_backoff_max``."""
    start_backoff_max: float = 30.0
    """The longest restart delay, and how long a version whose setup keeps failing is refused."""
    stop_timeout: float = 10.0
    """Seconds a stopping instance gets (``POST /shutdown``, then SIGTERM) before its process group is killed."""
    cancel_grace: float = Field(default=5.0, gt=0)
    """Seconds a running prediction gets to stop after a cancel (the user's, or its ``Cancel-After``
    deadline): a model that does not stop (blocked in C code, where coglet's cancel never fires) has its
    instance killed and replaced, and the prediction ends canceled all the same."""
    sandbox: bool = True
    """Run all model code (the schema step at push time, setup, predict, train) in a bubblewrap sandbox
    that hides the server's environment, processes and data dir. ``off`` runs models unconfined (logged
    as a warning at start); a host that cannot sandbox fails at start with the reason."""
    sandbox_binds: list[Path] = []
    """Host directories bound read-write, at the same path, into every sandbox (a shared model cache)."""


class SandboxLimits(BaseModel):
    """What one instance (or one build) may use; ``None``: no bound of cogport's own."""

    memory_mb: int | None = Field(default=None, gt=0)
    """Memory of the whole sandbox (its ``/tmp`` tmpfs included): a cgroup's limit; crossing it kills the model."""
    pids: int | None = Field(default=None, gt=0)
    """Processes and threads at once (a cgroup's ``pids.max``, and ``RLIMIT_NPROC`` as the floor)."""
    tmp_mb: int | None = Field(default=None, gt=0)
    """The size of the private ``/tmp`` (a tmpfs) and of the writable layer over the working directory."""
    cpus: float | None = Field(default=None, gt=0)
    """CPU time as a number of cores (a cgroup's quota); ``None``: an equal share with everything else."""

    def merged(self, other: SandboxLimits | None) -> SandboxLimits:
        """These limits with ``other``'s set fields taking precedence."""
        if other is None:
            return self
        return self.model_copy(update=other.model_dump(exclude_none=True))


class SandboxSettings(BaseModel):
    """The boundary around every piece of tenant code (docs/runtime.md, "Sandbox"): ``COGPORT_SANDBOX__*``."""

    egress: str = "public"
    """Where model code may connect, through cogport's egress proxy: ``none``; ``public`` (any public
    address, as input URLs); or a comma-separated allow-list of hosts (names, ``.domain`` suffixes,
    addresses, CIDR networks). Loopback, private, link-local and metadata addresses are refused unless an
    allow-list names them."""
    uid_base: int = Field(default=200_000, ge=1000)
    """Where cogport runs as root: each model's code runs as host uid ``uid_base + model id % uid_count``
    (a uid of its own per model, so per account too)."""
    uid_count: int = Field(default=65_536, ge=1)
    limits: SandboxLimits = Field(default_factory=lambda: SandboxLimits(memory_mb=8192, pids=1024, tmp_mb=4096))
    """The limits of every instance and build, unless ``hardware_limits`` says otherwise for its SKU."""
    hardware_limits: dict[str, SandboxLimits] = Field(default_factory=dict)
    """Per hardware SKU (``cpu``, ``gpu-t4``, ...): the fields set here replace those of ``limits``."""
    upload_max_mb: int = Field(default=1024, gt=0)
    """The largest output file one instance may upload (coglet's ``--upload-url``); larger fails."""

    def limits_for(self, hardware: str) -> SandboxLimits:
        return self.limits.merged(self.hardware_limits.get(hardware))


class InputSettings(BaseModel):
    """Input URLs: cogport fetches them itself (the model gets the bytes, never the URL)."""

    allow_private_networks: bool = False
    """Accept input URLs whose host resolves to a private address: for installs that fetch inputs from
    their own network. Loopback and link-local names and addresses stay refused (unless ``allowed_hosts``
    names them)."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """When set, the only hosts input URLs may name: names, ``.domain`` suffixes, addresses or networks
    (CIDR); an entry admits its hosts even when they are private or loopback (the operator said so)."""
    denied_hosts: list[str] = Field(default_factory=list)
    """Input hosts always refused (same forms as ``allowed_hosts``)."""
    max_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)
    """The largest body an input URL may have (1 GiB); larger fails the run."""
    fetch_timeout: float = Field(default=300.0, gt=0)
    """Seconds one input URL may take, redirects and body included."""
    max_redirects: int = Field(default=5, ge=0)
    """Redirects followed per input URL (each checked like the first URL)."""


class StorageSettings(BaseModel):
    """Where file bytes live: a directory under the data dir (the default) or an S3-compatible bucket."""

    url: str | None = None
    """``s3://bucket`` or ``s3://bucket/prefix``: keep files in that bucket (AWS S3, SeaweedFS, MinIO),
    under ``prefix/`` when given. Unset: ``<data_dir>/files``. Credentials come from botocore's default
    chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, instance roles)."""
    endpoint_url: str | None = None
    """The S3 endpoint, for services other than AWS (``http://127.0.0.1:8333`` for SeaweedFS). Addressing is
    path style (``{endpoint}/{bucket}/{key}``). It is also the host of the presigned URLs models fetch
    input files from, so it must be reachable from where models run."""
    region: str = "us-east-1"
    """The region requests (and presigned URLs) are signed for."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        bucket = value.removeprefix("s3://").split("/", 1)[0]
        if not value.startswith("s3://") or not bucket:
            raise ValueError("COGPORT_STORAGE__URL must look like s3://bucket or s3://bucket/prefix")
        return value

    @property
    def bucket(self) -> str:
        return (self.url or "").removeprefix("s3://").split("/", 1)[0]

    @property
    def prefix(self) -> str:
        """The key prefix inside the bucket, without slashes at either end (may be empty)."""
        parts = (self.url or "").removeprefix("s3://").split("/", 1)
        return parts[1].strip("/") if len(parts) > 1 else ""


class WebhookSettings(BaseModel):
    """Delivery of terminal webhooks (``completed``), which are retried until one is answered 2xx."""

    retry_for: float = Field(default=3600.0, ge=0)
    """Seconds after a prediction ends during which its terminal webhook is retried (then given up)."""
    retry_initial: float = Field(default=1.0, gt=0)
    """Seconds before the first retry; each next one waits twice as long, up to ``retry_max_delay``."""
    retry_max_delay: float = Field(default=300.0, gt=0)
    """The longest wait between two attempts."""
    concurrency: int = Field(default=256, ge=1)
    """Terminal webhook attempts in flight at once, per process, over all targets."""
    target_concurrency: int = Field(default=16, ge=1)
    """Requests in flight at once to one target (scheme, host and port), per process: terminal and
    intermediate webhooks together. A slow or hung receiver holds at most this many; the others go on."""
    timeout: float = Field(default=10.0, gt=0)
    """Seconds one attempt may take in all (waiting for a slot to its target, connecting, sending, the
    answer); a claimed terminal webhook is held three times as long before another process may try it."""
    allow_private_networks: bool = False
    """Let webhooks target loopback, link-local, private and unspecified addresses (refused by default)."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """When set, the only webhook hosts: names, ``.domain`` suffixes, addresses or networks (CIDR)."""
    denied_hosts: list[str] = Field(default_factory=list)
    """Webhook hosts always refused (same forms as ``allowed_hosts``)."""


class RaySettings(BaseModel):
    """The Ray backend (``COGPORT_BACKEND=ray``, docs/cluster.md): an existing Ray cluster runs the models."""

    address: str = ""
    """The cluster to join (``host:port`` of its head, as ``ray start --address`` takes it); required."""
    namespace: str = "cogport"
    """The Ray namespace of cogport's node supervisors (detached actors named ``cogport-node-<node id>``)."""
    node_dir: Path | None = None
    """Where a node supervisor keeps its instances' files, on its node. Unset: ``<temp dir>/cogport-node``."""
    refresh_interval: float = Field(default=0.5, gt=0)
    """Seconds between two reads of every node's state (capacity, instances, hardware)."""
    allow_unauthenticated: bool = False
    """Join a cluster without Ray's token authentication (``RAY_AUTH_MODE=token`` and a token in cogport's own
    environment): a warning at start instead of a refusal. Then any process that reaches the cluster's ports,
    model code on a node included, can run code on every node as the user Ray runs as (docs/cluster.md)."""


class DeploymentSettings(BaseModel):
    """Replicate's deployments (issue 10)."""

    offline_before_delete: float = Field(default=900.0, ge=0)
    """Seconds a deployment must have been offline (``min_instances`` 0) and unused (no prediction created
    through it) before it can be deleted: Replicate's 15 minutes."""


class MetricsSettings(BaseModel):
    """``GET /metrics`` (Prometheus text format; docs/operations.md)."""

    enabled: bool = True
    """Serve ``/metrics`` (off: 404) and record the counters."""
    token: str | None = None
    """A scrape token ``/metrics`` accepts as ``Authorization: Bearer <token>`` besides the admin's (which
    always works). It opens nothing else."""

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("COGPORT_METRICS__TOKEN must be at least 16 characters")
        return value or None


class RateLimitSettings(BaseModel):
    """Requests per account and minute, as Replicate limits them (429 with ``Retry-After`` beyond); 0: no limit.

    The counters are in the database, so every API process sharing it shares the limits."""

    creates_per_minute: int = Field(default=600, ge=0)
    """Prediction and training creates (``POST /v1/predictions``, model, deployment and training creates)."""
    requests_per_minute: int = Field(default=3000, ge=0)
    """Every other authenticated request (the admin account is never limited)."""


class WebSettings(BaseModel):
    """The web playground (``/``, ``/{owner}/{name}``, ``/p/{id}``; :mod:`cogport.web`)."""

    enabled: bool = True
    """Serve the playground's pages (off: they answer 404; the API is unchanged)."""
    session_days: float = Field(default=7.0, gt=0)
    """How long a browser stays signed in (the session cookie's and its row's lifetime)."""


class Settings(BaseSettings):
    """Everything an operator can configure."""

    model_config = SettingsConfigDict(
        env_prefix="COGPORT_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    data_dir: Path = Path("./data")
    database_url: str = ""
    """Empty means SQLite at ``<data_dir>/cogport.db``; ``postgresql://...`` for PostgreSQL."""
    database_schema: str | None = None
    """A PostgreSQL schema to keep the tables in (used by the test suite to isolate runs)."""
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = None
    """The base URL clients reach this server at; absolute URLs are built from it. When unset
    they are built from the request (honouring ``X-Forwarded-*`` from trusted proxies)."""
    admin_token: str | None = None
    """When set, the admin account's token (for scripted set-ups)."""
    admin_username: str = "admin"
    register_examples: bool = True
    hardware: list[HardwareSku] = Field(default_factory=list)
    detect_gpus: bool = True
    gpus: list[GpuSpec] | None = None
    """The GPUs instances may use, instead of what ``nvidia-smi`` reports (``detect_gpus``)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    """``json``: every log line (the ``cogport.access`` request log included) is one JSON object."""
    aborted_status: Literal["aborted", "canceled"] = "canceled"
    """How predictions aborted by a ``Cancel-After`` deadline are reported. Replicate says ``aborted``,
    which the official Python client 1.0.7 cannot parse and its polling loops never stop on, so the
    default reports ``canceled`` (with an ``error`` saying the deadline passed)."""
    node_id: str = ""
    """This process's name in the queue (claims); empty means hostname plus a random suffix."""
    lease_seconds: float = 15.0
    """How long a claim on a prediction lasts without renewal before another process takes over."""
    sync_wait_max: int = 60
    max_request_body_mb: float = Field(default=16.0, gt=0)
    """The largest request body (413 above it), but for uploads and pushes, which have limits of their own."""
    internal_url: str | None = None
    """The URL coglet instances on this machine reach this server at (signed input-file downloads and the
    output upload receiver). Unset: ``http://127.0.0.1:<port>`` (``[::1]`` when listening on IPv6 only)."""
    files_max_bytes: int = 100 * 1024 * 1024
    """The largest upload ``POST /v1/files`` accepts (413 above it)."""
    files_expiry_hours: float = 24.0
    """Uploads expire this long after creation (``expires_at``); the retention service then deletes them."""
    files_signing_secret: str | None = None
    """The secret that signs ``/v1/files/{id}/download`` URLs and derives upload tokens. Unset: generated once
    and kept in ``<data_dir>/secrets/files_signing_key`` (so every process sharing the data dir agrees)."""
    files_inline_max_bytes: int = 1024 * 1024
    """Own uploaded files up to this size reach the model as ``data:`` URLs; larger ones as signed URLs
    (presigned bucket URLs with S3 storage)."""
    files_input_url_ttl: float = 86400.0
    """Seconds a signed download URL handed to a model for an input file stays valid."""
    data_retention_hours: float | None = None
    """Remove inputs, outputs, logs and output files of predictions finished this long ago
    (``data_removed: true``). Unset or 0: keep them (Replicate itself uses 1 hour for API predictions)."""
    backend: Literal["local", "ray"] = "local"
    """Where models run: ``local`` (coglet processes on this machine) or ``ray`` (the nodes of a Ray
    cluster, ``COGPORT_RAY__*``; needs ``pip install 'cogport[cluster]'``)."""
    ray: RaySettings = Field(default_factory=RaySettings)
    build: BuildSettings = Field(default_factory=BuildSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    inputs: InputSettings = Field(default_factory=InputSettings)
    deployments: DeploymentSettings = Field(default_factory=DeploymentSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    web: WebSettings = Field(default_factory=WebSettings)

    @field_validator("admin_token")
    @classmethod
    def _reject_placeholder(cls, value: str | None) -> str | None:
        if value is not None and (len(value) < 16 or value.lower() in {"changeme", "change-me-please"}):
            raise ValueError("COGPORT_ADMIN_TOKEN must be at least 16 characters and not a placeholder")
        return value

    @field_validator("files_signing_secret")
    @classmethod
    def _reject_weak_secret(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("COGPORT_FILES_SIGNING_SECRET must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL for :attr:`database_url`."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'cogport.db'}"
        for prefix, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(prefix):
                return driver + url[len(prefix) :]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")
