"""Prefect deployments from the source configs: each source's `schedule` becomes one deployment.

Input: a folder of source YAMLs and a warehouse root; output: `RunnerDeployment`s — one
`ingest_source` deployment per source with a `schedule.cron` (named after the source id, its cron
read in its timezone, tagged `country:`, `disease:`, `reporter:`, `source:`), plus one weekly
`detect_alerts` deployment after the ingests and one hourly `check_overdue` (operator alerts for
overdue sources; cron `VIGILA_OVERDUE_CRON`, empty for none). `serve_all` runs them from this process (embedded
mode); `register` puts them on a Prefect server for workers of a work pool (production mode).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron

from vigila.config import SourceConfig, load_source, source_paths

ROOT = Path(__file__).resolve().parents[1]
INGEST_ENTRYPOINT = "flows/ingest.py:ingest_source"
DETECT_ENTRYPOINT = "flows/detect.py:detect_alerts"
DETECT_NAME = "detect-alerts"
# Thursdays 06:00 UTC: after every bundled source's weekly ingest (Tuesday/Wednesday mornings in the Americas).
DETECT_CRON = "0 6 * * 4"
DETECT_TIMEZONE = "UTC"
REGIONAL_ENTRYPOINT = "flows/regional.py:regional_summary"
REGIONAL_NAME = "regional-summary"
# Thursdays 07:00 UTC: an hour after detect-alerts, whose alarms the weekly summary and bulletin carry.
REGIONAL_CRON = "0 7 * * 4"
OVERDUE_ENTRYPOINT = "flows/notify.py:check_overdue"
OVERDUE_NAME = "check-overdue"
OVERDUE_CRON_ENV = "VIGILA_OVERDUE_CRON"   # overrides OVERDUE_CRON; set it empty for no check_overdue deployment
# Every hour at :15 UTC: an overdue source is reported within the hour of its deadline (the check is cheap).
OVERDUE_CRON = "15 * * * *"


def _absolute(warehouse: str | Path) -> str:
    """A local warehouse as an absolute path (runs may start in another working directory); URIs unchanged."""
    warehouse = str(warehouse)
    return warehouse if "://" in warehouse else str(Path(warehouse).expanduser().resolve())


def source_tags(source: SourceConfig) -> list[str]:
    country = source.country.upper() if source.country else "multi"  # many countries in one file
    return [f"country:{country}", *(f"disease:{d}" for d in source.diseases),
            f"reporter:{source.reporter.type}", f"source:{source.id}"]


@dataclass(frozen=True)
class Scheduled:
    """A source config that has a schedule, with the YAML it came from."""

    path: Path
    source: SourceConfig


def scheduled_sources(sources_dir: str | Path) -> list[Scheduled]:
    """Every `*.yaml` / `*.yml` of SOURCES_DIR with a `schedule.cron`, by file name; `ConfigError` on a bad one."""
    folder = Path(sources_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such sources folder")
    found = []
    for path in source_paths(folder):
        cfg = load_source(path)
        if cfg.schedule.cron:
            found.append(Scheduled(path.resolve(), cfg))
    ids = [s.source.id for s in found]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        from vigila.config import ConfigError

        raise ConfigError(f"{folder}: source id used by more than one config: {', '.join(dupes)}")
    return found


def _flows(from_source: bool):
    """The four flows: imported here (`serve`), or loaded from the project checkout (`deploy`, for workers)."""
    if from_source:
        from prefect import Flow

        return tuple(Flow.from_source(str(ROOT), e)
                     for e in (INGEST_ENTRYPOINT, DETECT_ENTRYPOINT, REGIONAL_ENTRYPOINT, OVERDUE_ENTRYPOINT))
    from flows.detect import detect_alerts
    from flows.ingest import ingest_source
    from flows.notify import check_overdue
    from flows.regional import regional_summary

    return ingest_source, detect_alerts, regional_summary, check_overdue


def overdue_cron() -> str | None:
    """The `check_overdue` cron: `VIGILA_OVERDUE_CRON` when set (empty: none), else `OVERDUE_CRON`."""
    return os.environ.get(OVERDUE_CRON_ENV, OVERDUE_CRON).strip() or None


def deployments_for(sources_dir: str | Path, warehouse: str | Path = "warehouse", *, from_source: bool = False,
                    detect: bool = True, overdue: str | None = "env", cluster: str | None = None) -> list[RunnerDeployment]:
    """One `ingest_source` deployment per scheduled source config, then the weekly `detect-alerts` and
    `regional-summary` (with `detect`), then `check-overdue` on cron OVERDUE ("env": `overdue_cron()`; None: no such deployment) over the
    same sources folder, in UTC. `cluster`: a Dask scheduler address given to the ingest and detect-alerts
    deployments as their `cluster` parameter (their tasks then run on that cluster).

    from_source=False (serve): the entrypoint is the module path `flows.ingest.ingest_source`, importable
    wherever this environment is. from_source=True (deploy): the flow is loaded from the project
    directory (`flow.from_source(ROOT, "flows/ingest.py:ingest_source")`), so the registered deployment
    carries a pull step that sets the working directory to this checkout for the worker.
    """
    warehouse = _absolute(warehouse)
    on_cluster = {"cluster": cluster} if cluster else {}   # a Dask scheduler address: ingest and detection tasks run there
    overdue = overdue_cron() if overdue == "env" else overdue
    ingest, detect_flow, regional_flow, overdue_flow = _flows(from_source)
    kind = {} if from_source else {"entrypoint_type": EntrypointType.MODULE_PATH}
    out = []
    diseases: set[str] = set()
    for s in scheduled_sources(sources_dir):
        cfg = s.source
        diseases.update(cfg.diseases)
        out.append(ingest.to_deployment(
            name=cfg.id,
            schedule=Cron(cfg.schedule.cron, timezone=cfg.schedule.timezone),
            tags=source_tags(cfg),
            parameters={"source_path": str(s.path), "warehouse": warehouse, **on_cluster},
            description=f"{cfg.description or cfg.reporter.institution} (source config {s.path.name})",
            **kind,
        ))
    weekly = [(detect_flow, DETECT_NAME, DETECT_CRON, "alerts",
               "Weekly early detection over the published cases_weekly (vigila/detect/detection.yaml), after the week's ingests"),
              (regional_flow, REGIONAL_NAME, REGIONAL_CRON, "summary",
               "Weekly regional summary: reconcile reporters, endemic channels, weekly_summary and the bulletin of "
               "the latest week (vigila/regional/summary.yaml), after detect-alerts")]
    for flow, name, cron, tag, description in weekly if detect and out else []:
        out.append(flow.to_deployment(name=name, schedule=Cron(cron, timezone=DETECT_TIMEZONE),
                                      tags=[tag, *(f"disease:{d}" for d in sorted(diseases))],
                                      parameters={"warehouse": warehouse, **(on_cluster if flow is detect_flow else {})},
                                      description=description, **kind))
    if overdue and out:
        out.append(overdue_flow.to_deployment(
            name=OVERDUE_NAME,
            schedule=Cron(overdue, timezone="UTC"),
            tags=["operate"],
            parameters={"warehouse": warehouse, "sources_dir": str(Path(sources_dir).resolve())},
            description="Operator alerts: a vigila.source.overdue event (and webhook) per source past its "
                        "reporting deadline (VIGILA_ALERT_WEBHOOK / VIGILA_ALERT_BLOCK)",
            **kind,
        ))
    return out


def full_name(deployment: RunnerDeployment) -> str:
    return f"{deployment.flow_name}/{deployment.name}"


def ensure_process_pool(name: str) -> bool:
    """Create work pool NAME (type process, Prefect's default job template) unless it exists; True if created."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process",
                                                   base_job_template=ProcessWorker.get_default_base_job_template()))
            return True


def register(deployments: list[RunnerDeployment], work_pool: str) -> list[tuple[RunnerDeployment, str]]:
    """Create or update each deployment on the configured Prefect API, for workers of WORK_POOL."""
    done = []
    for d in deployments:
        done.append((d, str(d.apply(work_pool_name=work_pool))))
    return done


def serve_all(deployments: list[RunnerDeployment], limit: int | None = None) -> None:
    """Serve the deployments from this process until interrupted (schedules paused on shutdown)."""
    from prefect import serve

    serve(*deployments, limit=limit)
