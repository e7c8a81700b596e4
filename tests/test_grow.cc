// Doubling growth of heap arrays (core/grow.h).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "cnn/status.h"
#include "core/grow.h"

TEST(ArrayGrow, DoublesFromTheFirstCapacityUntilTheRequestFits) {
  int *v = nullptr;
  size_t cap = 0;
  ASSERT_EQ(cnn_array_grow(&v, &cap, 1, sizeof *v, 4), CNN_OK) << cnn_last_error();
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(cap, 4u);
  ASSERT_EQ(cnn_array_grow(&v, &cap, 5, sizeof *v, 4), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cap, 8u);
  ASSERT_EQ(cnn_array_grow(&v, &cap, 17, sizeof *v, 4), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cap, 32u);  // 8 -> 16 -> 32 in one call
  v[31] = 7;            // all of it is usable (ASan checks)
  free(v);
}

TEST(ArrayGrow, LeavesAnArrayThatIsLargeEnoughAlone) {
  size_t cap = 8;
  int *v = static_cast<int *>(malloc(cap * sizeof *v));
  ASSERT_NE(v, nullptr);
  int *before = v;
  ASSERT_EQ(cnn_array_grow(&v, &cap, 8, sizeof *v, 4), CNN_OK);
  EXPECT_EQ(v, before);
  EXPECT_EQ(cap, 8u);
  free(v);
}

TEST(ArrayGrow, KeepsTheElementsWhenItGrows) {
  int64_t *v = nullptr;
  size_t cap = 0;
  const int n = 10000;
  for (int i = 0; i < n; i++) {
    ASSERT_EQ(cnn_array_grow(&v, &cap, (size_t)i + 1, sizeof *v, 16), CNN_OK) << cnn_last_error();
    ASSERT_GE(cap, (size_t)i + 1);
    v[i] = (int64_t)i * i;
  }
  EXPECT_EQ(cap, 16384u);  // 16 doubled ten times
  for (int i = 0; i < n; i++) ASSERT_EQ(v[i], (int64_t)i * i) << "element " << i;
  free(v);
}

TEST(ArrayGrow, RefusesARequestWhoseByteSizeOverflowsSizeT) {
  struct elem {
    char bytes[16];
  };
  size_t cap = 4;
  elem *v = static_cast<elem *>(calloc(cap, sizeof *v));
  ASSERT_NE(v, nullptr);
  v[3].bytes[0] = 'x';
  elem *before = v;
  // SIZE_MAX / 16 + 2 elements of 16 bytes wrap around to 16 bytes: a wrapping check would "succeed" with 1 element
  const size_t needs[] = {SIZE_MAX / sizeof *v + 2, SIZE_MAX / sizeof *v + 1, SIZE_MAX};
  for (size_t need : needs) {
    EXPECT_EQ(cnn_array_grow(&v, &cap, need, sizeof *v, 4), CNN_ERR_NO_MEMORY) << need;
    EXPECT_NE(std::string(cnn_last_error()).find("larger than a size_t can count"), std::string::npos)
        << cnn_last_error();
    EXPECT_EQ(v, before);  // the array and its capacity are as they were
    EXPECT_EQ(cap, 4u);
    EXPECT_EQ(v[3].bytes[0], 'x');
  }
  free(v);
}
