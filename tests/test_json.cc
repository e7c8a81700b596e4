// JSON parser and writer (core/io/json.h).
#include <gtest/gtest.h>

#include <clocale>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/io/json.h"

namespace {

struct Doc {
  cnn_json *root = nullptr;
  cnn_status st;
  explicit Doc(const std::string &text) { st = cnn_json_parse(text.data(), text.size(), &root); }
  ~Doc() { cnn_json_free(root); }
};

std::string last_error() { return cnn_last_error(); }

std::string str(const cnn_json *v) {
  size_t len = 0;
  const char *s = cnn_json_string(v, &len);
  return s ? std::string(s, len) : "<not a string>";
}

std::string write(void (*body)(cnn_json_writer *), int indent = 0, cnn_status *status = nullptr) {
  cnn_json_writer w;
  cnn_json_writer_init(&w, indent);
  body(&w);
  char *text = nullptr;
  size_t len = 0;
  cnn_status st = cnn_json_writer_finish(&w, &text, &len);
  cnn_json_writer_free(&w);
  if (status) *status = st;
  std::string out = text ? std::string(text, len) : "<failed>";
  free(text);
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// parsing

TEST(JsonParse, ValidDocumentWithEveryType) {
  Doc d(" {\"a\": [1, -2.5, 3e2, true, false, null], \"b\": {\"c\": \"d\"}, \"e\": {}, \"f\": []}\n");
  ASSERT_EQ(d.st, CNN_OK) << last_error();
  ASSERT_EQ(cnn_json_type_of(d.root), CNN_JSON_OBJECT);
  EXPECT_EQ(cnn_json_count(d.root), 4u);
  EXPECT_STREQ(cnn_json_key_at(d.root, 0, nullptr), "a");
  EXPECT_STREQ(cnn_json_key_at(d.root, 3, nullptr), "f");
  EXPECT_EQ(cnn_json_key_at(d.root, 4, nullptr), nullptr);
  const cnn_json *a = cnn_json_get(d.root, "a");
  ASSERT_EQ(cnn_json_type_of(a), CNN_JSON_ARRAY);
  ASSERT_EQ(cnn_json_count(a), 6u);
  int64_t i = 0;
  double x = 0;
  int b = -1;
  EXPECT_TRUE(cnn_json_int64(cnn_json_at(a, 0), &i));
  EXPECT_EQ(i, 1);
  EXPECT_TRUE(cnn_json_double(cnn_json_at(a, 1), &x));
  EXPECT_EQ(x, -2.5);
  EXPECT_FALSE(cnn_json_int64(cnn_json_at(a, 1), &i));
  EXPECT_TRUE(cnn_json_int64(cnn_json_at(a, 2), &i));
  EXPECT_EQ(i, 300);
  EXPECT_TRUE(cnn_json_bool(cnn_json_at(a, 3), &b));
  EXPECT_EQ(b, 1);
  EXPECT_TRUE(cnn_json_bool(cnn_json_at(a, 4), &b));
  EXPECT_EQ(b, 0);
  EXPECT_EQ(cnn_json_type_of(cnn_json_at(a, 5)), CNN_JSON_NULL);
  EXPECT_EQ(cnn_json_at(a, 6), nullptr);
  EXPECT_EQ(str(cnn_json_get(cnn_json_get(d.root, "b"), "c")), "d");
  EXPECT_EQ(cnn_json_type_of(cnn_json_get(d.root, "e")), CNN_JSON_OBJECT);
  EXPECT_EQ(cnn_json_count(cnn_json_get(d.root, "f")), 0u);
  EXPECT_EQ(cnn_json_get(d.root, "zz"), nullptr);
  // accessors on the wrong type answer "no"
  EXPECT_EQ(cnn_json_get(a, "a"), nullptr);
  EXPECT_EQ(cnn_json_string(a, nullptr), nullptr);
  EXPECT_FALSE(cnn_json_double(d.root, &x));
  EXPECT_EQ(cnn_json_count(nullptr), 0u);
  EXPECT_EQ(cnn_json_type_of(nullptr), CNN_JSON_NULL);
  EXPECT_STREQ(cnn_json_type_name(CNN_JSON_OBJECT), "object");
}

TEST(JsonParse, ScalarsAtTheTopLevel) {
  for (const char *text : {"0", "-0", "\"x\"", "true", "null", " 12 "}) {
    Doc d(text);
    EXPECT_EQ(d.st, CNN_OK) << text << ": " << last_error();
  }
}

TEST(JsonParse, StringEscapesAndUnicode) {
  Doc d(R"(["a\"b\\c\/d\b\f\n\r\t", "\u0041\u00e9\u20AC", "\ud83d\ude00", "h\u0000i", "ünï €"])");
  ASSERT_EQ(d.st, CNN_OK) << last_error();
  EXPECT_EQ(str(cnn_json_at(d.root, 0)), "a\"b\\c/d\b\f\n\r\t");
  EXPECT_EQ(str(cnn_json_at(d.root, 1)), "A\xc3\xa9\xe2\x82\xac");
  EXPECT_EQ(str(cnn_json_at(d.root, 2)), "\xf0\x9f\x98\x80");  // U+1F600 from a surrogate pair
  EXPECT_EQ(str(cnn_json_at(d.root, 3)), std::string("h\0i", 3));
  EXPECT_EQ(str(cnn_json_at(d.root, 4)), "ünï €");
}

TEST(JsonParse, ExactIntegers) {
  Doc d("[9007199254740993, -9223372036854775808, 9223372036854775807, 9223372036854775808, 1e19, 2.50e1,"
        " 1.5, 100e-2, 0.0, -0e5, 1234567890" + std::string(19, '0') + "e-19, 1E+2, 1e-400, 5e-1]");
  ASSERT_EQ(d.st, CNN_OK) << last_error();
  int64_t v = 0;
  ASSERT_TRUE(cnn_json_int64(cnn_json_at(d.root, 0), &v));
  EXPECT_EQ(v, 9007199254740993LL);  // beyond 2^53: a double could not hold it
  ASSERT_TRUE(cnn_json_int64(cnn_json_at(d.root, 1), &v));
  EXPECT_EQ(v, std::numeric_limits<int64_t>::min());
  ASSERT_TRUE(cnn_json_int64(cnn_json_at(d.root, 2), &v));
  EXPECT_EQ(v, std::numeric_limits<int64_t>::max());
  EXPECT_FALSE(cnn_json_int64(cnn_json_at(d.root, 3), &v));  // 2^63 overflows
  EXPECT_FALSE(cnn_json_int64(cnn_json_at(d.root, 4), &v));
  ASSERT_TRUE(cnn_json_int64(cnn_json_at(d.root, 5), &v));
  EXPECT_EQ(v, 25);
  EXPECT_FALSE(cnn_json_int64(cnn_json_at(d.root, 6), &v));
  ASSERT_TRUE(cnn_json_int64(cnn_json_at(d.root, 7), &v));
  EXPECT_EQ(v, 1);
  ASSERT_TRUE(cnn_json_int64(cnn_json_at(d.root, 8), &v));
  EXPECT_EQ(v, 0);
  ASSERT_TRUE(cnn_json_int64(cnn_json_at(d.root, 9), &v));
  EXPECT_EQ(v, 0);
  ASSERT_TRUE(cnn_json_int64(cnn_json_at(d.root, 10), &v));
  EXPECT_EQ(v, 1234567890);
  ASSERT_TRUE(cnn_json_int64(cnn_json_at(d.root, 11), &v));
  EXPECT_EQ(v, 100);
  double x = 1;
  ASSERT_TRUE(cnn_json_double(cnn_json_at(d.root, 12), &x));
  EXPECT_EQ(x, 0.0);  // underflow to zero is fine
  EXPECT_FALSE(cnn_json_int64(cnn_json_at(d.root, 12), &v));
  ASSERT_TRUE(cnn_json_double(cnn_json_at(d.root, 13), &x));
  EXPECT_EQ(x, 0.5);
}

TEST(JsonParse, InvalidDocumentsAreFormatErrorsWithAnOffset) {
  struct {
    const char *text;
    const char *why;
  } cases[] = {
      {"", "end of input"},
      {"   ", "end of input"},
      {"{", "expected a string key"},
      {"[1, 2", "expected ','"},
      {"[1, 2,]", "expected a value"},
      {"{\"a\": 1,}", "expected a string key"},
      {"{\"a\" 1}", "expected ':'"},
      {"{'a': 1}", "expected a string key"},
      {"{a: 1}", "expected a string key"},
      {"[01]", "leading zeros"},
      {"[1.]", "decimal point"},
      {"[.5]", "expected a value"},
      {"[1e]", "exponent"},
      {"[+1]", "expected a value"},
      {"[-]", "expected a digit"},
      {"[NaN]", "expected a value"},
      {"[Infinity]", "expected a value"},
      {"[1e400]", "out of the range"},
      {"[tru]", "invalid literal"},
      {"[True]", "expected a value"},
      {"\"abc", "unterminated"},
      {"\"a\\", "unterminated"},
      {"\"a\nb\"", "control character"},
      {"\"\\x41\"", "invalid escape"},
      {"\"\\u12G4\"", "4 hex digits"},
      {"\"\\u12\"", "4 hex digits"},
      {"\"\\ud83d\"", "high surrogate"},
      {"\"\\ud83d\\u0041\"", "high surrogate"},
      {"\"\\ude00\"", "low surrogate"},
      {"\"\xff\"", "UTF-8"},
      {"\"\xc0\xaf\"", "UTF-8"},           // overlong '/'
      {"\"\xed\xa0\x80\"", "UTF-8"},       // a surrogate encoded in UTF-8
      {"\"\xf4\x90\x80\x80\"", "UTF-8"},   // above U+10FFFF
      {"\"\xe2\x82\"", "UTF-8"},           // cut-off sequence
      {"1 2", "after the value"},
      {"{} x", "after the value"},
      {"[1] // comment", "after the value"},
      {"{\"a\": 1, \"a\": 2}", "twice"},
  };
  for (const auto &c : cases) {
    Doc d(c.text);
    EXPECT_EQ(d.st, CNN_ERR_FORMAT) << c.text;
    EXPECT_EQ(d.root, nullptr) << c.text;
    EXPECT_NE(last_error().find("invalid JSON at byte "), std::string::npos) << c.text << ": " << last_error();
    EXPECT_NE(last_error().find(c.why), std::string::npos) << c.text << ": " << last_error();
  }
}

TEST(JsonParse, ErrorNamesTheByteOffset) {
  Doc d("{\"a\": [1, 2, x]}");
  ASSERT_EQ(d.st, CNN_ERR_FORMAT);
  EXPECT_NE(last_error().find("at byte 13"), std::string::npos) << last_error();
}

TEST(JsonParse, EmbeddedNulInTheTextIsAnError) {
  Doc d(std::string("[1,\0 2]", 7));
  EXPECT_EQ(d.st, CNN_ERR_FORMAT);
  Doc e(std::string("\"a\0b\"", 5));
  EXPECT_EQ(e.st, CNN_ERR_FORMAT);
}

TEST(JsonParse, DuplicateKeysInLargeObjectsAreFound) {
  std::string text = "{";
  for (int i = 0; i < 100; i++) text += "\"k" + std::to_string(i) + "\": " + std::to_string(i) + ",";
  Doc ok(text + "\"z\": 0}");
  EXPECT_EQ(ok.st, CNN_OK) << last_error();
  Doc dup(text + "\"k57\": 0}");
  EXPECT_EQ(dup.st, CNN_ERR_FORMAT);
  EXPECT_NE(last_error().find("\"k57\""), std::string::npos) << last_error();
  // keys that differ only after an embedded NUL are different keys
  Doc nul("{\"a\\u0000b\": 1, \"a\\u0000c\": 2}");
  EXPECT_EQ(nul.st, CNN_OK) << last_error();
  size_t len = 0;
  EXPECT_STREQ(cnn_json_key_at(nul.root, 1, &len), "a");
  EXPECT_EQ(len, 3u);
  EXPECT_EQ(cnn_json_get(nul.root, "a"), nullptr);
}

TEST(JsonParse, DepthLimit) {
  std::string ok(CNN_JSON_MAX_DEPTH, '['), deep(CNN_JSON_MAX_DEPTH + 1, '[');
  ok += std::string(CNN_JSON_MAX_DEPTH, ']');
  deep += std::string(CNN_JSON_MAX_DEPTH + 1, ']');
  Doc a(ok);
  EXPECT_EQ(a.st, CNN_OK) << last_error();
  Doc b(deep);
  EXPECT_EQ(b.st, CNN_ERR_FORMAT);
  EXPECT_NE(last_error().find("deeper"), std::string::npos) << last_error();
  // far deeper than the stack could take without the limit
  Doc c(std::string(1000000, '['));
  EXPECT_EQ(c.st, CNN_ERR_FORMAT);
  Doc o(std::string(100000, '{'));
  EXPECT_EQ(o.st, CNN_ERR_FORMAT);
}

TEST(JsonParse, LongNumbersAndLocale) {
  std::string digits = "0." + std::string(200, '0') + "1";
  Doc d("[" + digits + "]");
  ASSERT_EQ(d.st, CNN_OK) << last_error();
  double x;
  ASSERT_TRUE(cnn_json_double(cnn_json_at(d.root, 0), &x));
  EXPECT_DOUBLE_EQ(x, 1e-201);
  // a locale with a decimal comma must not change how "1.5" reads (when such a locale is installed)
  if (setlocale(LC_NUMERIC, "de_DE.UTF-8") || setlocale(LC_NUMERIC, "fr_FR.UTF-8")) {
    Doc e("[1.5]");
    ASSERT_EQ(e.st, CNN_OK) << last_error();
    ASSERT_TRUE(cnn_json_double(cnn_json_at(e.root, 0), &x));
    EXPECT_EQ(x, 1.5);
    EXPECT_EQ(write([](cnn_json_writer *w) { cnn_json_write_number(w, 2.25); }), "2.25");
    setlocale(LC_NUMERIC, "C");
  }
}

// Numbers the parser reads without strtod (short mantissas, small exponents) are the same doubles strtod gives,
// bit for bit, and so are the ones around the edges of that path (2^53, 10^22, 17 digits).
TEST(JsonParse, EveryNumberIsWhatStrtodReads) {
  std::vector<std::string> lits = {"0", "-0", "0.0", "-0.0", "1", "0.5", "0.1", "0.3", "255", "0.00392156862745098",
                                   "0.5019607843137255", "9007199254740992", "9007199254740993", "9007199254740991.5",
                                   "1e22", "1e23", "1.5e-22", "1e-23", "123456789012345678", "0.1234567890123456789",
                                   "4.9e-324", "1.7976931348623157e308", "0e400", "1E+2", "-2.5E-3", "00.5e1"};
  uint64_t state = 12345;
  auto next = [&state] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return state >> 33;
  };
  for (int i = 0; i < 20000; i++) {  // random literals: 1 to 19 digits, a point anywhere, exponents -30..30
    int nd = 1 + (int)(next() % 19);
    std::string m;
    for (int k = 0; k < nd; k++) m += (char)('0' + next() % 10);
    while (m.size() > 1 && m[0] == '0') m.erase(0, 1);  // JSON: no leading zeros
    std::string lit = (next() % 2 ? "-" : "") + m;
    size_t point = next() % (m.size() + 1);
    if (point > 0 && point < m.size()) lit.insert(lit.size() - m.size() + point, ".");
    if (next() % 2) lit += "e" + std::to_string((int)(next() % 61) - 30);
    lits.push_back(lit);
  }
  for (const std::string &lit : lits) {
    if (lit == "00.5e1") continue;  // not JSON (leading zero): refused below
    Doc d("[" + lit + "]");
    ASSERT_EQ(d.st, CNN_OK) << lit << ": " << last_error();
    double x;
    ASSERT_TRUE(cnn_json_double(cnn_json_at(d.root, 0), &x)) << lit;
    double want = std::strtod(lit.c_str(), nullptr);
    EXPECT_EQ(std::memcmp(&x, &want, sizeof x), 0) << lit << ": " << x << " vs strtod's " << want;
  }
  EXPECT_NE(Doc("[00.5e1]").st, CNN_OK);
}

// ---------------------------------------------------------------------------------------------------------------
// writing

TEST(JsonWrite, CommasColonsAndNesting) {
  std::string s = write([](cnn_json_writer *w) {
    cnn_json_write_begin_object(w);
    cnn_json_write_key(w, "a");
    cnn_json_write_int(w, -3);
    cnn_json_write_key(w, "b");
    cnn_json_write_begin_array(w);
    cnn_json_write_bool(w, 1);
    cnn_json_write_null(w);
    cnn_json_write_begin_object(w);
    cnn_json_write_end_object(w);
    cnn_json_write_begin_array(w);
    cnn_json_write_end_array(w);
    cnn_json_write_uint(w, 18446744073709551615ull);
    cnn_json_write_end_array(w);
    cnn_json_write_key(w, "c");
    cnn_json_write_string(w, "x");
    cnn_json_write_end_object(w);
  });
  EXPECT_EQ(s, "{\"a\":-3,\"b\":[true,null,{},[],18446744073709551615],\"c\":\"x\"}");
}

TEST(JsonWrite, Indented) {
  std::string s = write(
      [](cnn_json_writer *w) {
        cnn_json_write_begin_object(w);
        cnn_json_write_key(w, "a");
        cnn_json_write_begin_array(w);
        cnn_json_write_int(w, 1);
        cnn_json_write_int(w, 2);
        cnn_json_write_end_array(w);
        cnn_json_write_key(w, "e");
        cnn_json_write_begin_object(w);
        cnn_json_write_end_object(w);
        cnn_json_write_end_object(w);
      },
      2);
  EXPECT_EQ(s, "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"e\": {}\n}");
}

TEST(JsonWrite, EscapesStrings) {
  std::string s = write([](cnn_json_writer *w) {
    cnn_json_write_begin_array(w);
    cnn_json_write_string(w, "q\"b\\s/\b\f\n\r\t\x01\x1f\x7f é");
    cnn_json_write_string_n(w, "a\0b", 3);
    cnn_json_write_string(w, nullptr);
    cnn_json_write_end_array(w);
  });
  EXPECT_EQ(s, "[\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\x7f é\",\"a\\u0000b\",null]");
}

TEST(JsonWrite, FloatsAreTheirShortestDecimalAndReadBackExactly) {
  static std::vector<float> values;  // static: the writer callback is a plain function
  values = {0.1f, 0.5f, 1.0f / 3.0f, 1e-30f, 3.4028235e38f, -0.0f, 1.0f, 0.99999994f};
  uint32_t bits = 7;
  for (int i = 0; i < 5000; i++) {  // random finite floats
    bits = bits * 1664525u + 1013904223u;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    if (std::isfinite(f)) values.push_back(f);
  }
  std::string s = write([](cnn_json_writer *w) {
    cnn_json_write_begin_array(w);
    for (float f : values) cnn_json_write_float(w, f);
    cnn_json_write_float(w, NAN);
    cnn_json_write_end_array(w);
  });
  EXPECT_EQ(s.substr(0, 13), "[0.1,0.5,0.33") << s.substr(0, 40);
  EXPECT_EQ(s.substr(s.size() - 6), ",null]");
  Doc d(s);
  ASSERT_EQ(d.st, CNN_OK) << last_error();
  for (size_t i = 0; i < values.size(); i++) {
    double x;
    ASSERT_TRUE(cnn_json_double(cnn_json_at(d.root, i), &x)) << i;
    EXPECT_EQ((float)x, values[i]) << i;
  }
}

// A number of either width is a complete document: a second top-level value after it is refused.
TEST(JsonWrite, ASecondValueAfterATopLevelNumberIsRefused) {
  for (int as_float = 0; as_float < 2; as_float++) {
    cnn_status st = CNN_OK;
    std::string s = write(as_float ? +[](cnn_json_writer *w) {
      cnn_json_write_float(w, 1.5f);
      cnn_json_write_int(w, 2);
    } : +[](cnn_json_writer *w) {
      cnn_json_write_number(w, 1.5);
      cnn_json_write_int(w, 2);
    }, 0, &st);
    EXPECT_EQ(st, CNN_ERR_INVALID_ARG) << as_float << ": " << s;
    EXPECT_NE(std::string(last_error()).find("second value"), std::string::npos) << last_error();
  }
}

TEST(JsonWrite, NumbersRoundTripAndNonFiniteIsNull) {
  std::string s = write([](cnn_json_writer *w) {
    cnn_json_write_begin_array(w);
    cnn_json_write_number(w, 0.1);
    cnn_json_write_number(w, 1.0 / 3.0);
    cnn_json_write_number(w, 1e300);
    cnn_json_write_number(w, -0.0);
    cnn_json_write_number(w, 5e-324);
    cnn_json_write_number(w, NAN);
    cnn_json_write_number(w, INFINITY);
    cnn_json_write_number(w, -INFINITY);
    cnn_json_write_number(w, 3);
    cnn_json_write_end_array(w);
  });
  EXPECT_EQ(s.substr(0, 5), "[0.1,");
  EXPECT_NE(s.find(",null,null,null,3]"), std::string::npos) << s;
  Doc d(s);
  ASSERT_EQ(d.st, CNN_OK) << s << ": " << last_error();
  double x;
  ASSERT_TRUE(cnn_json_double(cnn_json_at(d.root, 1), &x));
  EXPECT_EQ(x, 1.0 / 3.0);
  ASSERT_TRUE(cnn_json_double(cnn_json_at(d.root, 2), &x));
  EXPECT_EQ(x, 1e300);
  ASSERT_TRUE(cnn_json_double(cnn_json_at(d.root, 4), &x));
  EXPECT_EQ(x, 5e-324);
  EXPECT_EQ(cnn_json_type_of(cnn_json_at(d.root, 5)), CNN_JSON_NULL);
}

TEST(JsonWrite, MisuseAndInvalidUtf8AreReportedAtFinish) {
  cnn_status st;
  write([](cnn_json_writer *w) { cnn_json_write_begin_object(w); }, 0, &st);
  EXPECT_EQ(st, CNN_ERR_INVALID_ARG);  // unfinished
  write([](cnn_json_writer *) {}, 0, &st);
  EXPECT_EQ(st, CNN_ERR_INVALID_ARG);  // empty
  write(
      [](cnn_json_writer *w) {
        cnn_json_write_begin_object(w);
        cnn_json_write_int(w, 1);  // no key
        cnn_json_write_end_object(w);
      },
      0, &st);
  EXPECT_EQ(st, CNN_ERR_INVALID_ARG);
  write(
      [](cnn_json_writer *w) {
        cnn_json_write_begin_array(w);
        cnn_json_write_key(w, "k");  // key in an array
        cnn_json_write_end_array(w);
      },
      0, &st);
  EXPECT_EQ(st, CNN_ERR_INVALID_ARG);
  write(
      [](cnn_json_writer *w) {
        cnn_json_write_begin_array(w);
        cnn_json_write_end_object(w);  // mismatched
      },
      0, &st);
  EXPECT_EQ(st, CNN_ERR_INVALID_ARG);
  write(
      [](cnn_json_writer *w) {
        cnn_json_write_int(w, 1);
        cnn_json_write_int(w, 2);  // two top-level values
      },
      0, &st);
  EXPECT_EQ(st, CNN_ERR_INVALID_ARG);
  write([](cnn_json_writer *w) { cnn_json_write_string(w, "bad \xff byte"); }, 0, &st);
  EXPECT_EQ(st, CNN_ERR_INVALID_ARG);
  EXPECT_NE(last_error().find("UTF-8"), std::string::npos) << last_error();
  write(
      [](cnn_json_writer *w) {
        for (int i = 0; i <= CNN_JSON_MAX_DEPTH; i++) cnn_json_write_begin_array(w);
      },
      0, &st);
  EXPECT_EQ(st, CNN_ERR_INVALID_ARG);
}

TEST(JsonWrite, RoundTripThroughTheParser) {
  std::string s = write([](cnn_json_writer *w) {
    cnn_json_write_begin_object(w);
    cnn_json_write_key(w, "name \"with\" quotes\n");
    cnn_json_write_string(w, "\xf0\x9f\x98\x80 \t end");
    cnn_json_write_key(w, "n");
    cnn_json_write_int(w, -9223372036854775807LL - 1);
    cnn_json_write_end_object(w);
  }, 4);
  Doc d(s);
  ASSERT_EQ(d.st, CNN_OK) << s << ": " << last_error();
  EXPECT_EQ(str(cnn_json_get(d.root, "name \"with\" quotes\n")), "\xf0\x9f\x98\x80 \t end");
  int64_t v;
  ASSERT_TRUE(cnn_json_int64(cnn_json_get(d.root, "n"), &v));
  EXPECT_EQ(v, std::numeric_limits<int64_t>::min());
}

TEST(StrBuf, AppendsAndFormats) {
  cnn_strbuf sb;
  cnn_strbuf_init(&sb);
  cnn_strbuf_appends(&sb, "abc");
  cnn_strbuf_appendf(&sb, "-%d-%s", 42, "x");
  std::string big(10000, 'z');
  cnn_strbuf_append(&sb, big.data(), big.size());
  EXPECT_EQ(sb.status, CNN_OK);
  EXPECT_EQ(std::string(sb.data, sb.len), "abc-42-x" + big);
  EXPECT_EQ(sb.data[sb.len], '\0');
  cnn_strbuf_free(&sb);
  cnn_strbuf_free(&sb);
}
