from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlacementState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLACEMENT_STATE_UNSPECIFIED: _ClassVar[PlacementState]
    PLACEMENT_STATE_STARTING: _ClassVar[PlacementState]
    PLACEMENT_STATE_RUNNING: _ClassVar[PlacementState]
    PLACEMENT_STATE_EXITED: _ClassVar[PlacementState]
    PLACEMENT_STATE_FAILED: _ClassVar[PlacementState]
    PLACEMENT_STATE_LOST: _ClassVar[PlacementState]
    PLACEMENT_STATE_PAUSED: _ClassVar[PlacementState]

class LogStream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_STREAM_UNSPECIFIED: _ClassVar[LogStream]
    LOG_STREAM_STDOUT: _ClassVar[LogStream]
    LOG_STREAM_STDERR: _ClassVar[LogStream]
PLACEMENT_STATE_UNSPECIFIED: PlacementState
PLACEMENT_STATE_STARTING: PlacementState
PLACEMENT_STATE_RUNNING: PlacementState
PLACEMENT_STATE_EXITED: PlacementState
PLACEMENT_STATE_FAILED: PlacementState
PLACEMENT_STATE_LOST: PlacementState
PLACEMENT_STATE_PAUSED: PlacementState
LOG_STREAM_UNSPECIFIED: LogStream
LOG_STREAM_STDOUT: LogStream
LOG_STREAM_STDERR: LogStream

class TunnelFrame(_message.Message):
    __slots__ = ("offer", "data", "close")
    OFFER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    offer: TunnelOffer
    data: bytes
    close: TunnelClose
    def __init__(self, offer: _Optional[_Union[TunnelOffer, _Mapping]] = ..., data: _Optional[bytes] = ..., close: _Optional[_Union[TunnelClose, _Mapping]] = ...) -> None: ...

class TunnelOffer(_message.Message):
    __slots__ = ("placement_id", "container_port")
    PLACEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_PORT_FIELD_NUMBER: _ClassVar[int]
    placement_id: str
    container_port: int
    def __init__(self, placement_id: _Optional[str] = ..., container_port: _Optional[int] = ...) -> None: ...

class TunnelClose(_message.Message):
    __slots__ = ("error", "message")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    error: str
    message: str
    def __init__(self, error: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("enrollment_token", "csr_pem", "hostname")
    ENROLLMENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    enrollment_token: str
    csr_pem: str
    hostname: str
    def __init__(self, enrollment_token: _Optional[str] = ..., csr_pem: _Optional[str] = ..., hostname: _Optional[str] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("certificate_pem", "ca_certificate_pem", "node_id", "connect_address")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: str
    ca_certificate_pem: str
    node_id: str
    connect_address: str
    def __init__(self, certificate_pem: _Optional[str] = ..., ca_certificate_pem: _Optional[str] = ..., node_id: _Optional[str] = ..., connect_address: _Optional[str] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "placement_status", "log_chunk", "usage_report", "goodbye", "owner_activity")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    LOG_CHUNK_FIELD_NUMBER: _ClassVar[int]
    USAGE_REPORT_FIELD_NUMBER: _ClassVar[int]
    GOODBYE_FIELD_NUMBER: _ClassVar[int]
    OWNER_ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    heartbeat: Heartbeat
    placement_status: PlacementStatus
    log_chunk: LogChunk
    usage_report: UsageReport
    goodbye: Goodbye
    owner_activity: OwnerActivity
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., placement_status: _Optional[_Union[PlacementStatus, _Mapping]] = ..., log_chunk: _Optional[_Union[LogChunk, _Mapping]] = ..., usage_report: _Optional[_Union[UsageReport, _Mapping]] = ..., goodbye: _Optional[_Union[Goodbye, _Mapping]] = ..., owner_activity: _Optional[_Union[OwnerActivity, _Mapping]] = ...) -> None: ...

class ControlMessage(_message.Message):
    __slots__ = ("start_placement", "stop_placement", "drain", "ping", "usage_ack", "colocation", "overlay_config")
    START_PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    STOP_PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    USAGE_ACK_FIELD_NUMBER: _ClassVar[int]
    COLOCATION_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_CONFIG_FIELD_NUMBER: _ClassVar[int]
    start_placement: StartPlacement
    stop_placement: StopPlacement
    drain: Drain
    ping: Ping
    usage_ack: UsageAck
    colocation: Colocation
    overlay_config: OverlayConfig
    def __init__(self, start_placement: _Optional[_Union[StartPlacement, _Mapping]] = ..., stop_placement: _Optional[_Union[StopPlacement, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., usage_ack: _Optional[_Union[UsageAck, _Mapping]] = ..., colocation: _Optional[_Union[Colocation, _Mapping]] = ..., overlay_config: _Optional[_Union[OverlayConfig, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent_version", "runtime", "hostname", "gpus", "vgpus", "placements", "network_unsupported", "egress_allowed", "overlay")
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    VGPUS_FIELD_NUMBER: _ClassVar[int]
    PLACEMENTS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_UNSUPPORTED_FIELD_NUMBER: _ClassVar[int]
    EGRESS_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    runtime: str
    hostname: str
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    vgpus: _containers.RepeatedCompositeFieldContainer[VGpu]
    placements: _containers.RepeatedCompositeFieldContainer[RunningPlacement]
    network_unsupported: bool
    egress_allowed: bool
    overlay: OverlayHello
    def __init__(self, agent_version: _Optional[str] = ..., runtime: _Optional[str] = ..., hostname: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ..., vgpus: _Optional[_Iterable[_Union[VGpu, _Mapping]]] = ..., placements: _Optional[_Iterable[_Union[RunningPlacement, _Mapping]]] = ..., network_unsupported: _Optional[bool] = ..., egress_allowed: _Optional[bool] = ..., overlay: _Optional[_Union[OverlayHello, _Mapping]] = ...) -> None: ...

class OverlayHello(_message.Message):
    __slots__ = ("public_key",)
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    public_key: str
    def __init__(self, public_key: _Optional[str] = ...) -> None: ...

class OverlayConfig(_message.Message):
    __slots__ = ("address", "prefix_length", "hub_public_key", "hub_endpoint", "hub_address", "network", "keepalive_seconds", "mtu")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    HUB_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    HUB_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    HUB_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    KEEPALIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    address: str
    prefix_length: int
    hub_public_key: str
    hub_endpoint: str
    hub_address: str
    network: str
    keepalive_seconds: int
    mtu: int
    def __init__(self, address: _Optional[str] = ..., prefix_length: _Optional[int] = ..., hub_public_key: _Optional[str] = ..., hub_endpoint: _Optional[str] = ..., hub_address: _Optional[str] = ..., network: _Optional[str] = ..., keepalive_seconds: _Optional[int] = ..., mtu: _Optional[int] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("vni", "address", "prefix_length", "mtu", "remote_hosts", "names", "peers")
    VNI_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    REMOTE_HOSTS_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    vni: int
    address: str
    prefix_length: int
    mtu: int
    remote_hosts: _containers.RepeatedScalarFieldContainer[str]
    names: _containers.RepeatedCompositeFieldContainer[SegmentName]
    peers: _containers.RepeatedCompositeFieldContainer[SegmentPeer]
    def __init__(self, vni: _Optional[int] = ..., address: _Optional[str] = ..., prefix_length: _Optional[int] = ..., mtu: _Optional[int] = ..., remote_hosts: _Optional[_Iterable[str]] = ..., names: _Optional[_Iterable[_Union[SegmentName, _Mapping]]] = ..., peers: _Optional[_Iterable[_Union[SegmentPeer, _Mapping]]] = ...) -> None: ...

class SegmentPeer(_message.Message):
    __slots__ = ("public_key", "endpoint", "address")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    public_key: str
    endpoint: str
    address: str
    def __init__(self, public_key: _Optional[str] = ..., endpoint: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class SegmentName(_message.Message):
    __slots__ = ("name", "address")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class Gpu(_message.Message):
    __slots__ = ("index", "uuid", "name", "memory_bytes", "compute_capability", "architecture", "driver_version", "cuda_version", "mig_capable", "mig_enabled", "fake", "mig_profiles")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CUDA_VERSION_FIELD_NUMBER: _ClassVar[int]
    MIG_CAPABLE_FIELD_NUMBER: _ClassVar[int]
    MIG_ENABLED_FIELD_NUMBER: _ClassVar[int]
    FAKE_FIELD_NUMBER: _ClassVar[int]
    MIG_PROFILES_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    name: str
    memory_bytes: int
    compute_capability: str
    architecture: str
    driver_version: str
    cuda_version: str
    mig_capable: bool
    mig_enabled: bool
    fake: bool
    mig_profiles: _containers.RepeatedCompositeFieldContainer[MigProfile]
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., name: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., compute_capability: _Optional[str] = ..., architecture: _Optional[str] = ..., driver_version: _Optional[str] = ..., cuda_version: _Optional[str] = ..., mig_capable: _Optional[bool] = ..., mig_enabled: _Optional[bool] = ..., fake: _Optional[bool] = ..., mig_profiles: _Optional[_Iterable[_Union[MigProfile, _Mapping]]] = ...) -> None: ...

class MigProfile(_message.Message):
    __slots__ = ("name", "memory_bytes", "slice_count", "max_instances")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    SLICE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    name: str
    memory_bytes: int
    slice_count: int
    max_instances: int
    def __init__(self, name: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., slice_count: _Optional[int] = ..., max_instances: _Optional[int] = ...) -> None: ...

class VGpu(_message.Message):
    __slots__ = ("local_id", "gpu_uuid", "memory_bytes", "compute_share_percent", "pool", "enforcement_env", "enforcement", "mig_device_uuid", "fake")
    class EnforcementEnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LOCAL_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_UUID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SHARE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    ENFORCEMENT_ENV_FIELD_NUMBER: _ClassVar[int]
    ENFORCEMENT_FIELD_NUMBER: _ClassVar[int]
    MIG_DEVICE_UUID_FIELD_NUMBER: _ClassVar[int]
    FAKE_FIELD_NUMBER: _ClassVar[int]
    local_id: str
    gpu_uuid: str
    memory_bytes: int
    compute_share_percent: int
    pool: str
    enforcement_env: _containers.ScalarMap[str, str]
    enforcement: str
    mig_device_uuid: str
    fake: bool
    def __init__(self, local_id: _Optional[str] = ..., gpu_uuid: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., compute_share_percent: _Optional[int] = ..., pool: _Optional[str] = ..., enforcement_env: _Optional[_Mapping[str, str]] = ..., enforcement: _Optional[str] = ..., mig_device_uuid: _Optional[str] = ..., fake: _Optional[bool] = ...) -> None: ...

class RunningPlacement(_message.Message):
    __slots__ = ("placement_id", "state", "vgpu_local_ids", "started_at_ms", "last_usage_seq", "last_log_seq", "paused_at_ms")
    PLACEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VGPU_LOCAL_IDS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_USAGE_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_SEQ_FIELD_NUMBER: _ClassVar[int]
    PAUSED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    placement_id: str
    state: PlacementState
    vgpu_local_ids: _containers.RepeatedScalarFieldContainer[str]
    started_at_ms: int
    last_usage_seq: int
    last_log_seq: int
    paused_at_ms: int
    def __init__(self, placement_id: _Optional[str] = ..., state: _Optional[_Union[PlacementState, str]] = ..., vgpu_local_ids: _Optional[_Iterable[str]] = ..., started_at_ms: _Optional[int] = ..., last_usage_seq: _Optional[int] = ..., last_log_seq: _Optional[int] = ..., paused_at_ms: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sent_at_ms", "gpus", "ping_nonce", "draining", "running_placements", "overlay_rtt_us")
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    PING_NONCE_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_PLACEMENTS_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_RTT_US_FIELD_NUMBER: _ClassVar[int]
    sent_at_ms: int
    gpus: _containers.RepeatedCompositeFieldContainer[GpuSample]
    ping_nonce: int
    draining: bool
    running_placements: int
    overlay_rtt_us: int
    def __init__(self, sent_at_ms: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[GpuSample, _Mapping]]] = ..., ping_nonce: _Optional[int] = ..., draining: _Optional[bool] = ..., running_placements: _Optional[int] = ..., overlay_rtt_us: _Optional[int] = ...) -> None: ...

class GpuSample(_message.Message):
    __slots__ = ("index", "uuid", "utilization_percent", "memory_used_bytes", "temperature_celsius", "power_milliwatts", "compute_processes", "fake")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    POWER_MILLIWATTS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_PROCESSES_FIELD_NUMBER: _ClassVar[int]
    FAKE_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    utilization_percent: int
    memory_used_bytes: int
    temperature_celsius: int
    power_milliwatts: int
    compute_processes: int
    fake: bool
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., utilization_percent: _Optional[int] = ..., memory_used_bytes: _Optional[int] = ..., temperature_celsius: _Optional[int] = ..., power_milliwatts: _Optional[int] = ..., compute_processes: _Optional[int] = ..., fake: _Optional[bool] = ...) -> None: ...

class PlacementStatus(_message.Message):
    __slots__ = ("placement_id", "state", "exit_code", "message", "at_ms", "limits_not_enforced")
    PLACEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_NOT_ENFORCED_FIELD_NUMBER: _ClassVar[int]
    placement_id: str
    state: PlacementState
    exit_code: int
    message: str
    at_ms: int
    limits_not_enforced: str
    def __init__(self, placement_id: _Optional[str] = ..., state: _Optional[_Union[PlacementState, str]] = ..., exit_code: _Optional[int] = ..., message: _Optional[str] = ..., at_ms: _Optional[int] = ..., limits_not_enforced: _Optional[str] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("placement_id", "seq", "stream", "lines")
    PLACEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    placement_id: str
    seq: int
    stream: LogStream
    lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, placement_id: _Optional[str] = ..., seq: _Optional[int] = ..., stream: _Optional[_Union[LogStream, str]] = ..., lines: _Optional[_Iterable[str]] = ...) -> None: ...

class UsageReport(_message.Message):
    __slots__ = ("placement_id", "seq", "interval_start_ms", "interval_end_ms", "vgpu_count", "vgpu_milliseconds", "signature")
    PLACEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_MS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_END_MS_FIELD_NUMBER: _ClassVar[int]
    VGPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    VGPU_MILLISECONDS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    placement_id: str
    seq: int
    interval_start_ms: int
    interval_end_ms: int
    vgpu_count: int
    vgpu_milliseconds: int
    signature: bytes
    def __init__(self, placement_id: _Optional[str] = ..., seq: _Optional[int] = ..., interval_start_ms: _Optional[int] = ..., interval_end_ms: _Optional[int] = ..., vgpu_count: _Optional[int] = ..., vgpu_milliseconds: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class StartPlacement(_message.Message):
    __slots__ = ("placement_id", "image", "command", "env", "vgpu_local_ids", "memory_limit_bytes", "cpu_millicores", "pids_limit", "network_allowed", "ports", "peers", "expires_at_ms", "issued_for_state", "pausable", "service_ports", "tunnel_addresses", "tunnel_pool_size", "role", "placement_index", "placement_count", "segment")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PLACEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    VGPU_LOCAL_IDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_MILLICORES_FIELD_NUMBER: _ClassVar[int]
    PIDS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ISSUED_FOR_STATE_FIELD_NUMBER: _ClassVar[int]
    PAUSABLE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_PORTS_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_POOL_SIZE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    placement_id: str
    image: str
    command: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    vgpu_local_ids: _containers.RepeatedScalarFieldContainer[str]
    memory_limit_bytes: int
    cpu_millicores: int
    pids_limit: int
    network_allowed: bool
    ports: _containers.RepeatedCompositeFieldContainer[PortMapping]
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    expires_at_ms: int
    issued_for_state: str
    pausable: bool
    service_ports: _containers.RepeatedCompositeFieldContainer[ServicePort]
    tunnel_addresses: _containers.RepeatedScalarFieldContainer[str]
    tunnel_pool_size: int
    role: str
    placement_index: int
    placement_count: int
    segment: Segment
    def __init__(self, placement_id: _Optional[str] = ..., image: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., vgpu_local_ids: _Optional[_Iterable[str]] = ..., memory_limit_bytes: _Optional[int] = ..., cpu_millicores: _Optional[int] = ..., pids_limit: _Optional[int] = ..., network_allowed: _Optional[bool] = ..., ports: _Optional[_Iterable[_Union[PortMapping, _Mapping]]] = ..., peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ..., expires_at_ms: _Optional[int] = ..., issued_for_state: _Optional[str] = ..., pausable: _Optional[bool] = ..., service_ports: _Optional[_Iterable[_Union[ServicePort, _Mapping]]] = ..., tunnel_addresses: _Optional[_Iterable[str]] = ..., tunnel_pool_size: _Optional[int] = ..., role: _Optional[str] = ..., placement_index: _Optional[int] = ..., placement_count: _Optional[int] = ..., segment: _Optional[_Union[Segment, _Mapping]] = ...) -> None: ...

class ServicePort(_message.Message):
    __slots__ = ("name", "container_port")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_PORT_FIELD_NUMBER: _ClassVar[int]
    name: str
    container_port: int
    def __init__(self, name: _Optional[str] = ..., container_port: _Optional[int] = ...) -> None: ...

class PortMapping(_message.Message):
    __slots__ = ("container_port", "host_port", "protocol")
    CONTAINER_PORT_FIELD_NUMBER: _ClassVar[int]
    HOST_PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    container_port: int
    host_port: int
    protocol: str
    def __init__(self, container_port: _Optional[int] = ..., host_port: _Optional[int] = ..., protocol: _Optional[str] = ...) -> None: ...

class Peer(_message.Message):
    __slots__ = ("placement_id", "address", "port")
    PLACEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    placement_id: str
    address: str
    port: int
    def __init__(self, placement_id: _Optional[str] = ..., address: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class StopPlacement(_message.Message):
    __slots__ = ("placement_id", "grace_seconds")
    PLACEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    placement_id: str
    grace_seconds: int
    def __init__(self, placement_id: _Optional[str] = ..., grace_seconds: _Optional[int] = ...) -> None: ...

class Goodbye(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    def __init__(self, nonce: _Optional[int] = ...) -> None: ...

class UsageAck(_message.Message):
    __slots__ = ("placement_id", "seq", "rejected", "code", "reason")
    PLACEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    placement_id: str
    seq: int
    rejected: bool
    code: str
    reason: str
    def __init__(self, placement_id: _Optional[str] = ..., seq: _Optional[int] = ..., rejected: _Optional[bool] = ..., code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class OwnerActivity(_message.Message):
    __slots__ = ("active", "at_ms", "reason")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    active: bool
    at_ms: int
    reason: str
    def __init__(self, active: _Optional[bool] = ..., at_ms: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Colocation(_message.Message):
    __slots__ = ("watch_owner", "utilization_threshold_percent", "memory_threshold_percent", "grace_seconds", "owner_time")
    WATCH_OWNER_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_THRESHOLD_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_THRESHOLD_PERCENT_FIELD_NUMBER: _ClassVar[int]
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OWNER_TIME_FIELD_NUMBER: _ClassVar[int]
    watch_owner: bool
    utilization_threshold_percent: int
    memory_threshold_percent: int
    grace_seconds: int
    owner_time: bool
    def __init__(self, watch_owner: _Optional[bool] = ..., utilization_threshold_percent: _Optional[int] = ..., memory_threshold_percent: _Optional[int] = ..., grace_seconds: _Optional[int] = ..., owner_time: _Optional[bool] = ...) -> None: ...
