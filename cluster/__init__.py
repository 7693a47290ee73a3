"""Running the stages on Ray clusters: the Jobs API submitter, KubeRay manifests and their generator."""
