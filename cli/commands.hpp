#pragma once
// The syncbus subcommands. Each takes the arguments after its name, prints
// to stdout what the user asked for and to stderr what went wrong, and
// returns an ExitCode (tools/command_line.hpp).

#include <string>
#include <vector>

namespace syncbus::cli {

using Arguments = std::vector<std::string>;

int run_tail(const Arguments& args);
int run_publish(const Arguments& args);
int run_vacuum(const Arguments& args);
int run_status(const Arguments& args);
int run_doctor(const Arguments& args);
int run_bench(const Arguments& args);

}  // namespace syncbus::cli
