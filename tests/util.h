// Helpers shared by the test suites: temporary directories and files, running the cnn program.
#pragma once

#include <string>
#include <vector>

namespace cnntest {

// A fresh directory under /tmp, removed with its contents when the object goes away.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string &path() const { return path_; }
  std::string file(const std::string &name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Whether `s` contains `part` (a program's output, a file).
inline bool has(const std::string &s, const std::string &part) { return s.find(part) != std::string::npos; }

void write_file(const std::string &path, const std::string &bytes);
std::string read_file(const std::string &path);

// The test-set accuracy in a `cnn train --metrics-json` file ("test": {... "accuracy": A ...}); -1 when the file
// has none.
double metrics_test_accuracy(const std::string &metrics_json_path);

// Runs the built `cnn` program with the given arguments (each shell-quoted); returns the exit status and
// fills `output` with stdout and stderr together.
int run_cnn(const std::vector<std::string> &args, std::string *output);

}  // namespace cnntest
