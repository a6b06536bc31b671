#include "measures.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace syncbus::bench {

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

std::optional<std::int64_t> sent_time_in(std::string_view text) {
  const auto at = text.find("\"t\":");
  if (at == std::string_view::npos) return std::nullopt;
  std::int64_t t = 0;
  bool digits = false;
  for (auto i = at + 4; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    t = t * 10 + (text[i] - '0');
    digits = true;
  }
  if (!digits) return std::nullopt;
  return t;
}

double process_cpu() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

std::optional<std::vector<std::string>> proc_stat(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(in, text)) return std::nullopt;
  const auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(text.substr(close + 2));
  std::vector<std::string> fields;
  for (std::string f; rest >> f;) fields.push_back(f);
  return fields;
}

std::optional<double> server_cpu(int postmaster) {
  if (postmaster <= 0) return std::nullopt;
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
  const auto own = proc_stat(postmaster);
  if (!own || own->size() < 15) return std::nullopt;
  double total = (std::stod((*own)[11]) + std::stod((*own)[12]) + std::stod((*own)[13]) +
                  std::stod((*own)[14])) /
                 tick;
  std::ifstream children("/proc/" + std::to_string(postmaster) + "/task/" +
                         std::to_string(postmaster) + "/children");
  for (int child; children >> child;) {
    if (const auto f = proc_stat(child); f && f->size() > 12) {
      total += (std::stod((*f)[11]) + std::stod((*f)[12])) / tick;
    }
  }
  return total;
}

long resident_kb() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * ::sysconf(_SC_PAGESIZE) / 1024;
}

}  // namespace syncbus::bench
