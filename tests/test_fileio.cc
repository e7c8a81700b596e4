// Whole-file reading and atomic writing (core/fileio.h).
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "core/fileio.h"
#include "cnn/status.h"
#include "tests/fixtures.h"
#include "tests/util.h"

using cnntest::TempDir;

namespace {

cnn_status write_parts(const std::string &path, const std::vector<std::string> &chunks) {
  std::vector<const void *> parts;
  std::vector<size_t> sizes;
  for (const auto &c : chunks) {
    parts.push_back(c.data());
    sizes.push_back(c.size());
  }
  return cnn_write_file_atomic(path.c_str(), parts.data(), sizes.data(), (int)chunks.size());
}

}  // namespace

TEST(FileIO, ReadFileReturnsContentsAndATerminatingNul) {
  TempDir dir;
  std::string bytes("ab\0cd", 5);
  cnntest::write_file(dir.file("x"), bytes);
  unsigned char *data = nullptr;
  size_t len = 0;
  ASSERT_EQ(cnn_read_file(dir.file("x").c_str(), 100, &data, &len), CNN_OK) << cnn_last_error();
  EXPECT_EQ(len, 5u);
  EXPECT_EQ(std::string((char *)data, len), bytes);
  EXPECT_EQ(data[len], 0);
  free(data);
}

TEST(FileIO, ReadEmptyFileGivesNonNullBuffer) {
  TempDir dir;
  cnntest::write_file(dir.file("empty"), "");
  unsigned char *data = nullptr;
  size_t len = 7;
  ASSERT_EQ(cnn_read_file(dir.file("empty").c_str(), 100, &data, &len), CNN_OK);
  EXPECT_EQ(len, 0u);
  ASSERT_NE(data, nullptr);
  EXPECT_EQ(data[0], 0);
  free(data);
}

TEST(FileIO, ReadRefusesFilesAboveTheLimit) {
  TempDir dir;
  cnntest::write_file(dir.file("big"), std::string(101, 'x'));
  unsigned char *data = nullptr;
  size_t len = 0;
  EXPECT_EQ(cnn_read_file(dir.file("big").c_str(), 100, &data, &len), CNN_ERR_FORMAT);
  EXPECT_EQ(data, nullptr);
  EXPECT_NE(std::string(cnn_last_error()).find("big"), std::string::npos);
  EXPECT_NE(std::string(cnn_last_error()).find("limit"), std::string::npos);
  // exactly at the limit is fine
  ASSERT_EQ(cnn_read_file(dir.file("big").c_str(), 101, &data, &len), CNN_OK);
  EXPECT_EQ(len, 101u);
  free(data);
}

TEST(FileIO, ReadMissingFileIsNotFound) {
  TempDir dir;
  unsigned char *data = nullptr;
  size_t len = 0;
  EXPECT_EQ(cnn_read_file(dir.file("nope").c_str(), 100, &data, &len), CNN_ERR_NOT_FOUND);
  EXPECT_NE(std::string(cnn_last_error()).find("nope"), std::string::npos);
  EXPECT_EQ(cnn_read_file(dir.path().c_str(), 100, &data, &len), CNN_ERR_IO);
  EXPECT_NE(std::string(cnn_last_error()).find("directory"), std::string::npos);
}

TEST(FileIO, ReadNonRegularFileWithLimit) {
  unsigned char *data = nullptr;
  size_t len = 0;
  // /dev/zero never ends: the cap must stop it
  EXPECT_EQ(cnn_read_file("/dev/zero", 1000, &data, &len), CNN_ERR_FORMAT);
  EXPECT_EQ(data, nullptr);
  ASSERT_EQ(cnn_read_file("/dev/null", 1000, &data, &len), CNN_OK);
  EXPECT_EQ(len, 0u);
  free(data);
}

TEST(FileIO, AtomicWriteConcatenatesParts) {
  TempDir dir;
  std::string path = dir.file("out.bin");
  ASSERT_EQ(write_parts(path, {"hello ", "", "world"}), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnntest::read_file(path), "hello world");
  ASSERT_EQ(write_parts(path, {"replaced"}), CNN_OK);
  EXPECT_EQ(cnntest::read_file(path), "replaced");
  ASSERT_EQ(write_parts(path, {}), CNN_OK);
  EXPECT_EQ(cnntest::read_file(path), "");
  EXPECT_EQ(cnntest::list_dir(dir.path(), true).size(), 1u);  // no temporary files left
}

TEST(FileIO, AtomicWriteRespectsUmask) {
  TempDir dir;
  std::string path = dir.file("mode");
  ASSERT_EQ(write_parts(path, {"x"}), CNN_OK);
  struct stat sb;
  ASSERT_EQ(stat(path.c_str(), &sb), 0);
  mode_t mask = umask(0);
  umask(mask);
  EXPECT_EQ(sb.st_mode & 0777, 0666 & ~mask);
}

TEST(FileIO, AtomicWriteIntoMissingDirectoryFailsCleanly) {
  TempDir dir;
  std::string path = dir.file("no-such-dir/out.bin");
  EXPECT_NE(write_parts(path, {"data"}), CNN_OK);
  EXPECT_NE(std::string(cnn_last_error()).find("out.bin"), std::string::npos);
  EXPECT_TRUE(cnntest::list_dir(dir.path(), true).empty());
}

TEST(FileIO, FailedRenameLeavesOldTargetAndNoTempFile) {
  // The target is a non-empty directory: the temp file is written and synced, then rename() fails. The old
  // "file" (the directory and its content) must be intact and the temp file gone.
  TempDir dir;
  std::string target = dir.file("target");
  ASSERT_EQ(mkdir(target.c_str(), 0755), 0);
  cnntest::write_file(target + "/keep", "old");
  EXPECT_EQ(write_parts(target, {"new contents"}), CNN_ERR_IO);
  EXPECT_NE(std::string(cnn_last_error()).find("target"), std::string::npos);
  EXPECT_EQ(cnntest::read_file(target + "/keep"), "old");
  auto names = cnntest::list_dir(dir.path(), true);
  ASSERT_EQ(names.size(), 1u);
  EXPECT_EQ(names[0], "target");
}

TEST(FileIO, FailedWriteLeavesOldFileIntact) {
  // A write that fails half-way: in a child process, RLIMIT_FSIZE (which binds root too) makes write() fail
  // with EFBIG after 4 bytes. The old file must be intact and no temporary file left behind.
  TempDir dir;
  std::string path = dir.file("model");
  cnntest::write_file(path, "old");
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {4, 4};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(10);
    std::string big(100, 'x');
    cnn_status st = write_parts(path, {big});
    bool named = std::string(cnn_last_error()).find("model") != std::string::npos;
    _exit(st == CNN_ERR_IO && named ? 0 : 11);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(cnntest::read_file(path), "old");
  EXPECT_EQ(cnntest::list_dir(dir.path(), true).size(), 1u);
}

TEST(FileIO, AtomicWriteRefusesDataMissingForAPart) {
  TempDir dir;
  std::string path = dir.file("model");
  cnntest::write_file(path, "old");
  const void *parts[2] = {"abc", nullptr};
  size_t sizes[2] = {3, 10};
  EXPECT_EQ(cnn_write_file_atomic(path.c_str(), parts, sizes, 2), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnntest::read_file(path), "old");
  EXPECT_EQ(cnntest::list_dir(dir.path(), true).size(), 1u);
}

TEST(FileIO, BasenameStripsDirectories) {
  EXPECT_STREQ(cnn_path_basename("/a/b/c.gz"), "c.gz");
  EXPECT_STREQ(cnn_path_basename("c.gz"), "c.gz");
  EXPECT_STREQ(cnn_path_basename("dir/"), "");
  EXPECT_STREQ(cnn_path_basename(nullptr), "");
}
