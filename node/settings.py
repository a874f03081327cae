"""``[node]`` and ``[broker]``: the DICOM edge's own configuration."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from db.settings import SectionSettings
from node.hosts import check_host_pattern, default_matcher

# Studies that arrive over DICOM are analysed only where an annotation locates the lesions, unless
# the peer says otherwise; ``triphase analyze`` on a folder keeps the declared centre-crop fallback.
REQUIRE_ANNOTATION_ON_ARRIVAL = True


def _ae_title(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= 16 or "\\" in value or not value.isprintable():
        raise ValueError(f"invalid AE title {value!r}: 1 to 16 printable characters, no backslash")
    return value


class PeerSettings(BaseModel):
    """A PACS or modality allowed to send to the node (``[[node.peers]]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    ae_title: str
    host: str | None = Field(default=None, description="if set, the association must come from this address, "
                             "CIDR range or host name")
    port: int | None = Field(default=None, ge=1, le=65535, description="its own SCP port, for sending back")
    quiet_period_s: float | None = Field(default=None, gt=0, description="overrides node.quiet_period_s")
    shadow: bool = Field(default=False, description="analyse and audit this peer's studies, send nothing back")
    require_annotation: bool = Field(
        default=REQUIRE_ANNOTATION_ON_ARRIVAL, description="its studies are analysed only where a SEG, RTSTRUCT or "
        "SR locates the lesions (no centre-crop fallback); completion by roles waits for the annotation")

    _check_ae = field_validator("ae_title")(classmethod(lambda cls, v: _ae_title(v)))
    _check_host = field_validator("host")(classmethod(lambda cls, v: None if v is None else check_host_pattern(v)))


class NodeTlsSettings(BaseModel):
    """``[node.tls]``: a second listener that speaks DICOM over TLS (PS3.15 Annex B)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    port: int = Field(default=2762, ge=0, le=65535, description="0 picks a free port (tests)")
    certificate: Path = Field(description="PEM certificate chain the node presents")
    private_key: Path = Field(description="PEM private key of that certificate")
    ca_certificates: Path | None = Field(default=None, description="PEM CAs that sign the peers' client certificates")
    require_client_certificate: bool = Field(default=False, description="refuse peers without a trusted certificate")

    @model_validator(mode="after")
    def _client_certificates_need_a_ca(self) -> NodeTlsSettings:
        if self.require_client_certificate and self.ca_certificates is None:
            raise ValueError("require_client_certificate needs ca_certificates to verify them with")
        return self


class NodeSettings(SectionSettings):
    section: ClassVar[str | None] = "node"
    model_config = SettingsConfigDict(env_prefix="TRIPHASE_NODE__", env_nested_delimiter="__",
                                      extra="ignore", frozen=True)

    ae_title: str = "TRIPHASE"
    bind: str = Field(default="127.0.0.1", description="deployments beside a PACS set 0.0.0.0")
    port: int = Field(default=11112, ge=0, le=65535, description="0 picks a free port (tests)")
    max_pdu: int = Field(default=262144, ge=0, description="largest PDU we receive; 0 = unlimited")
    acse_timeout_s: float = Field(default=30.0, gt=0)
    dimse_timeout_s: float = Field(default=60.0, gt=0)
    idle_timeout_s: float = Field(default=60.0, gt=0, description="network idle timeout of an association")
    max_associations: int = Field(default=16, ge=1,
                                  description="negotiated associations at once, all peers together")
    artim_timeout_s: float = Field(default=10.0, gt=0, description="a new connection must have sent its whole "
                                   "A-ASSOCIATE-RQ (and finished TLS) within this time")
    max_pending: int = Field(default=32, ge=1, description="connections not yet negotiated; the oldest is closed "
                             "when a new one arrives and the pool is full")
    max_per_address: int = Field(default=8, ge=1, description="connections from one source address, pending and open")
    receivers: int = Field(default=1, ge=1, le=64, description="processes receiving on the same port(s) "
                           "(taking associations in turn by load), so that N associations use N cores; "
                           "the association limits apply to each process")
    plain: bool = Field(default=True, description="false: no plain-TCP listener, only [node.tls]")
    tls: NodeTlsSettings | None = None
    quiet_period_s: float = Field(default=30.0, gt=0,
                                  description="a study is complete this long after its last instance")
    hard_cap_s: float = Field(default=3600.0, gt=0, description="...or this long after its first, whichever is first")
    settle_s: float = Field(default=5.0, ge=0, description="a study whose required roles are all present "
                            "completes once no instance has arrived for this long")
    completion_poll_s: float = Field(default=1.0, gt=0)
    max_instance_mb: int = Field(default=2048, ge=0, description="refuse (0xA704) an instance larger than this; "
                                 "past twice this size the association is aborted; 0 = no cap")
    min_free_disk_mb: int = Field(default=1024, ge=0, description="refuse instances (0xA700) below this free space")
    shutdown_grace_s: float = Field(default=10.0, ge=0,
                                    description="how long open associations may go on after SIGTERM")
    promiscuous: bool = Field(default=False, description="accept any calling AE title (labs only)")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="serve Prometheus /metrics on this port "
                              "at node.bind; 0 = off")
    spool_dir: Path | None = Field(default=None, description="default <data_dir>/spool")
    peers: tuple[PeerSettings, ...] = ()

    _check_ae = field_validator("ae_title")(classmethod(lambda cls, v: _ae_title(v)))

    @model_validator(mode="after")
    def _some_listener(self) -> NodeSettings:
        if not self.plain and self.tls is None:
            raise ValueError("plain = false needs a [node.tls] section, or the node would listen nowhere")
        return self

    def peer_for(self, ae_title: str, address: str | None) -> PeerSettings | None:
        """The configured peer matching a calling AE title (and address when the peer names one)."""
        for peer in self.peers:
            if peer.ae_title == ae_title.strip() and (peer.host is None
                                                      or default_matcher.matches(peer.host, address)):
                return peer
        return None

    def shadow_for(self, calling_ae: str | None) -> bool:
        """Whether studies sent by this AE title are shadow runs (a peer's ``shadow`` setting)."""
        return any(p.shadow for p in self.peers if calling_ae is not None and p.ae_title == calling_ae.strip())

    def require_annotation_for(self, calling_ae: str | None) -> bool:
        """Whether studies from this AE title need a lesion annotation (a peer's ``require_annotation``;
        a sender that is no configured peer, accepted in promiscuous mode, gets the default)."""
        peers = [p for p in self.peers if calling_ae is not None and p.ae_title == calling_ae.strip()]
        return any(p.require_annotation for p in peers) if peers else REQUIRE_ANNOTATION_ON_ARRIVAL

    def quiet_period_for(self, peer: PeerSettings | None) -> float:
        return peer.quiet_period_s if peer and peer.quiet_period_s else self.quiet_period_s


class BrokerSettings(SectionSettings):
    """``[broker]``: where completed studies are published for the workers (by task name)."""

    section: ClassVar[str | None] = "broker"
    model_config = SettingsConfigDict(env_prefix="TRIPHASE_BROKER__", extra="ignore", frozen=True)

    url: str = "redis://127.0.0.1:6379/0"
    visibility_timeout_s: int = Field(default=3600, gt=0)
