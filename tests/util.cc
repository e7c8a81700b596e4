#include "tests/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace cnntest {

TempDir::TempDir() {
  char tmpl[] = "/tmp/cnn-test-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::string cmd = "rm -rf '" + path_ + "'";
  if (system(cmd.c_str()) != 0) fprintf(stderr, "could not remove %s\n", path_.c_str());
}

void write_file(const std::string &path, const std::string &bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), (std::streamsize)bytes.size());
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::string read_file(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

static std::string shell_quote(const std::string &s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

double metrics_test_accuracy(const std::string &metrics_json_path) {
  const std::string metrics = read_file(metrics_json_path);
  const size_t at = metrics.find("\"test\"");
  if (at == std::string::npos) return -1.0;
  const size_t acc = metrics.find("\"accuracy\": ", at);
  return acc == std::string::npos ? -1.0 : std::stod(metrics.substr(acc + 12));
}

int run_cnn(const std::vector<std::string> &args, std::string *output) {
  // CNN_TEST_TOOL: the program to run instead of the one built beside the tests (a suite copied to another
  // machine, as bench/gpu_check.sh does, finds its `cnn` there)
  const char *tool = getenv("CNN_TEST_TOOL");
  std::string cmd = shell_quote(tool && *tool ? tool : CNN_TOOL_PATH);
  for (const auto &a : args) cmd += " " + shell_quote(a);
  cmd += " 2>&1";
  FILE *p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace cnntest
