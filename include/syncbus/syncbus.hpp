#pragma once
/// \file syncbus.hpp
/// Everything syncbus offers, in one include: the ClusterBus contract, the
/// PostgreSQL bus and its options, the in-memory bus, the errors, the log
/// and gap types, the counters and the version.

#include <syncbus/bus_stats.hpp>
#include <syncbus/cluster_bus.hpp>
#include <syncbus/errors.hpp>
#include <syncbus/export.hpp>
#include <syncbus/gap_event.hpp>
#include <syncbus/in_memory_bus.hpp>
#include <syncbus/log.hpp>
#include <syncbus/postgres_bus.hpp>
#include <syncbus/postgres_bus_options.hpp>
#include <syncbus/prometheus.hpp>
#include <syncbus/queue_policy.hpp>
#include <syncbus/spill_mode.hpp>
#include <syncbus/version.hpp>
