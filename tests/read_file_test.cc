// common/read_file.h: a whole file as bytes, and errors that name the file, what it is, and why.
#include "common/read_file.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace spargo {
namespace {
using ::spargo::testing::NewTempDir;
using ::spargo::testing::WriteFile;
using ::testing::HasSubstr;

TEST(ReadFileToString, ReadsEveryByte) {
  const std::string dir = NewTempDir("read-file");
  std::string bytes = "line\r\n";
  bytes.push_back('\0');
  bytes += std::string(200000, 'x');  // more than one read's buffer
  bytes += "\xff\x01 end";
  WriteFile(dir + "/f.bin", bytes);
  absl::StatusOr<std::string> got = ReadFileToString(dir + "/f.bin", "sample");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, bytes);
  WriteFile(dir + "/empty", "");
  EXPECT_EQ(ReadFileToString(dir + "/empty", "sample").value(), "");
}

TEST(ReadFileToString, ErrorsNameTheFileWhatItIsAndWhy) {
  const std::string dir = NewTempDir("read-file");
  absl::StatusOr<std::string> missing = ReadFileToString(dir + "/none.json", "run summary");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("run summary '" + dir + "/none.json': cannot be opened: No such file or directory"));

  absl::StatusOr<std::string> directory = ReadFileToString(dir, "run summary");  // opens, but cannot be read
  EXPECT_FALSE(directory.ok());
  EXPECT_THAT(std::string(directory.status().message()), HasSubstr("run summary '" + dir + "'"));

  WriteFile(dir + "/big", std::string(1000, 'a'));
  absl::StatusOr<std::string> big = ReadFileToString(dir + "/big", "token file", 999);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("token file '" + dir + "/big': larger than 999 bytes"));
  EXPECT_EQ(ReadFileToString(dir + "/big", "token file", 1000).value().size(), 1000u);
}

}  // namespace
}  // namespace spargo
