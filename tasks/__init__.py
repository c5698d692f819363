"""SeqIO task and mixture registration. Import `tasks` (or a gin file's `import tasks`) to register all."""

from tasks import qa, ramp, trajectories  # noqa: F401  pylint: disable=unused-import
