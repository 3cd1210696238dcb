"""Several hosts on one machine: network namespaces on a private bridge, CPU caps with
cgroups, and the serving stack spread over them (`dev.hosts.bed`). Used by the cross-host
tests and `make scale-bench`; Linux and root only (`network.unavailable_reason`)."""
