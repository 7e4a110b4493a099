"""BentoML's HTTP request metrics with an endpoint label from a bounded set.

BentoML labels its request metrics with the raw request path, so every path a client (or a
scanner) tries adds series to every worker's metric files that are never freed, and /metrics
grows without bound. Here a path the service serves keeps its own label, a path under a
static-files prefix is labelled with the prefix, and every other path is labelled OTHER.

install() puts the bounded middleware in place of BentoML's, before the worker builds its app;
the metric names, label names and everything else stay BentoML's.
"""

from collections.abc import Iterable

OTHER = "/{other}"


class RouteLabels:
    """Maps a request path to the endpoint label it is counted under."""

    def __init__(self, paths: Iterable[str], prefixes: Iterable[str] = ()):
        self.paths = frozenset(paths)
        self.prefixes = tuple(prefix.rstrip("/") + "/" for prefix in prefixes)

    def __call__(self, path: str) -> str:
        if path in self.paths:
            return path
        for prefix in self.prefixes:
            if path.startswith(prefix):
                return prefix + "{path}"
        return OTHER


class _BoundedLabels:
    """A metric whose `endpoint` label goes through RouteLabels."""

    def __init__(self, metric, route_label: RouteLabels):
        self._metric = metric
        self._route_label = route_label

    def labels(self, *values, **labels):
        if "endpoint" in labels:
            labels["endpoint"] = self._route_label(labels["endpoint"])
        return self._metric.labels(*values, **labels)

    def __getattr__(self, name):
        return getattr(self._metric, name)


def install(route_label: RouteLabels) -> None:
    """Make BentoML's request-metrics middleware label endpoints with route_label."""
    from bentoml._internal.server.http import instruments

    base = instruments.RunnerTrafficMetricsMiddleware
    if getattr(base, "route_label", None) is not None:
        base.route_label = route_label
        return

    class BoundedRouteMetrics(base):
        def _setup(self, *args, **kwargs):
            super()._setup(*args, **kwargs)
            for name, metric in list(vars(self).items()):
                if name.startswith("metrics_") and hasattr(metric, "labels"):
                    setattr(self, name, _BoundedLabels(metric, type(self).route_label))

    BoundedRouteMetrics.route_label = route_label
    instruments.RunnerTrafficMetricsMiddleware = BoundedRouteMetrics
