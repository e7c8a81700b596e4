// cnn serve, the model server: its request parser on its own, then the `cnn serve` program on loopback, started as
// a child process on a port the kernel picks and spoken to by a small HTTP client over sockets. Every wait is
// bounded in time, and every server started is stopped (SIGKILL from the destructor when a test fails early).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stb_image_write.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "core/data/image.h"
#include "core/io/json.h"
#include "core/serve/serve.h"
}
#include "tests/util.h"

namespace {

using cnntest::TempDir;

using cnntest::has;

// ---- models and images ------------------------------------------------------------------------------------------

// A gray 8x8 model with class names, and an RGB 6x6 one that resizes to 9x7 before its centre crop and normalizes:
// both of cnn predict's preparations are exercised.
const char kGray[] = "input 8 8 1\nconv 4 3 relu\nmaxpool 2\nflatten\ndense 3 softmax\n";
const char kRgb[] = "input 6 6 3\nconv 5 3 relu\nflatten\ndense 4 softmax\n";

struct Backend {
  cnn_backend *b = nullptr;
  Backend() { EXPECT_EQ(cnn_backend_create("cpu", &b), CNN_OK); }
  ~Backend() { cnn_backend_destroy(b); }
};

// What make_model stores beside the weights.
enum Extras { kClassNames, kResizeAndNormalization, kNothing, kProfile };

// Writes BASE/VERSION/model.safetensors for a definition; returns the model file's path.
std::string make_model(const std::string &base, int version, const char *text, Extras extras, uint64_t seed = 1) {
  Backend be;
  cnn_net *net = nullptr;
  EXPECT_EQ(cnn_net_from_text(text, "test", be.b, seed, &net), CNN_OK) << cnn_last_error();
  if (extras == kClassNames || extras == kProfile) {
    const char *names[] = {"cat", "dog", "bird"};
    EXPECT_EQ(cnn_net_set_class_names(net, 3, names), CNN_OK);
  }
  if (extras == kProfile) {  // the training set's: gray pixels around 0.3, the classes equally often
    const float mean[] = {0.3f}, sd[] = {0.2f}, freq[] = {1.0f / 3, 1.0f / 3, 1.0f / 3};
    EXPECT_EQ(cnn_net_set_data_profile(net, 1, mean, sd, 3, freq), CNN_OK) << cnn_last_error();
  } else if (extras == kResizeAndNormalization) {
    const float mean[] = {0.4f, 0.5f, 0.6f}, sd[] = {0.2f, 0.25f, 0.3f};
    EXPECT_EQ(cnn_net_set_normalization(net, 3, mean, sd), CNN_OK);
    EXPECT_EQ(cnn_net_set_resize(net, 9, 7), CNN_OK);
  }
  std::string dir = base + "/" + std::to_string(version);
  EXPECT_EQ(system(("mkdir -p '" + dir + "'").c_str()), 0);
  std::string path = dir + "/model.safetensors";
  EXPECT_EQ(cnn_net_save(net, path.c_str()), CNN_OK) << cnn_last_error();
  cnn_net_destroy(net);
  return path;
}

// Probabilities of images through the library, as cnn predict computes them.
std::vector<float> predict_local(const std::string &model, const std::vector<float> &images, int n) {
  Backend be;
  cnn_net *net = nullptr;
  EXPECT_EQ(cnn_net_load(model.c_str(), be.b, &net), CNN_OK) << cnn_last_error();
  std::vector<float> probs((size_t)n * cnn_net_num_outputs(net));
  EXPECT_EQ(cnn_net_predict(net, images.data(), n, probs.data()), CNN_OK) << cnn_last_error();
  cnn_net_destroy(net);
  return probs;
}

std::vector<unsigned char> pattern_pixels(int h, int w, int c, int salt) {
  std::vector<unsigned char> px((size_t)h * w * c);
  for (size_t i = 0; i < px.size(); i++) px[i] = (unsigned char)((i * 37 + (size_t)salt * 101 + i * i) % 256);
  return px;
}

std::string base64(const std::string &bytes) {
  static const char *abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    unsigned v = (unsigned char)bytes[i] << 16 | (unsigned char)bytes[i + 1] << 8 | (unsigned char)bytes[i + 2];
    out += abc[v >> 18];
    out += abc[(v >> 12) & 63];
    out += abc[(v >> 6) & 63];
    out += abc[v & 63];
  }
  if (i + 1 == bytes.size()) {
    unsigned v = (unsigned char)bytes[i] << 16;
    out += abc[v >> 18];
    out += abc[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == bytes.size()) {
    unsigned v = (unsigned char)bytes[i] << 16 | (unsigned char)bytes[i + 1] << 8;
    out += abc[v >> 18];
    out += abc[(v >> 12) & 63];
    out += abc[(v >> 6) & 63];
    out += "=";
  }
  return out;
}

// Nested numbers of an (h, w, c) image of value v everywhere.
std::string constant_image_json(int h, int w, int c, double v) {
  std::ostringstream os;
  os << "[";
  for (int y = 0; y < h; y++) {
    os << (y ? ",[" : "[");
    for (int x = 0; x < w; x++) {
      os << (x ? ",[" : "[");
      for (int k = 0; k < c; k++) os << (k ? "," : "") << v;
      os << "]";
    }
    os << "]";
  }
  os << "]";
  return os.str();
}

// ---- JSON answers -------------------------------------------------------------------------------------------------

struct Json {
  cnn_json *doc = nullptr;
  explicit Json(const std::string &text) {
    if (cnn_json_parse(text.data(), text.size(), &doc) != CNN_OK) doc = nullptr;
  }
  ~Json() { cnn_json_free(doc); }
  Json(const Json &) = delete;
  Json &operator=(const Json &) = delete;
};

std::vector<std::vector<float>> rows_of(const cnn_json *v) {
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < cnn_json_count(v); i++) {
    std::vector<float> row;
    const cnn_json *r = cnn_json_at(v, i);
    for (size_t j = 0; j < cnn_json_count(r); j++) {
      double d = NAN;
      cnn_json_double(cnn_json_at(r, j), &d);
      row.push_back((float)d);
    }
    out.push_back(row);
  }
  return out;
}

std::string string_of(const cnn_json *v) {
  const char *s = cnn_json_string(v, nullptr);
  return s ? s : "";
}

// ---- the request parser, without a server ----------------------------------------------------------------------

cnn_serve_spec gray_spec() {
  cnn_serve_spec spec;
  spec.h = 2;
  spec.w = 2;
  spec.c = 1;
  spec.rh = 2;
  spec.rw = 2;
  spec.max_pixels = 0;
  spec.max_images = 4;
  return spec;
}

cnn_status parse(cnn_serve_api api, const std::string &body, const cnn_serve_spec &spec, cnn_serve_request *req) {
  return cnn_serve_parse_request(api, body.data(), body.size(), &spec, req);
}

TEST(ServeRequest, RowsColumnsAndInferTensorsGiveTheSameImages) {
  cnn_serve_spec spec = gray_spec();
  const float want[] = {0.f, 0.25f, 0.5f, 1.f};
  const char *bodies[][2] = {
      {"p", R"({"instances": [[[0, 0.25], [0.5, 1]]]})"},
      {"p", R"({"instances": [[[[0], [0.25]], [[0.5], [1]]]]})"},
      {"p", R"({"signature_name": "serving_default", "instances": [{"input": [[0, 0.25], [0.5, 1]]}]})"},
      {"p", R"({"inputs": [[[0, 0.25], [0.5, 1]]]})"},
      {"p", R"({"inputs": {"input": [[[0, 0.25], [0.5, 1]]]}})"},
      {"c", R"({"examples": [[[0, 0.25], [0.5, 1]]], "top_k": 2})"},
      {"i", R"({"inputs": [{"name": "input", "shape": [1, 2, 2, 1], "datatype": "FP32", "data": [0, 0.25, 0.5, 1]}]})"},
      {"i", R"({"inputs": [{"name": "input", "shape": [1, 2, 2], "datatype": "FP32", "data": [[[0, 0.25], [0.5, 1]]]}]})"},
  };
  for (auto &b : bodies) {
    cnn_serve_api api = b[0][0] == 'p' ? CNN_SERVE_PREDICT : b[0][0] == 'c' ? CNN_SERVE_CLASSIFY : CNN_SERVE_INFER;
    cnn_serve_request req;
    ASSERT_EQ(parse(api, b[1], spec, &req), CNN_OK) << b[1] << ": " << cnn_last_error();
    ASSERT_EQ(req.n, 1) << b[1];
    for (int i = 0; i < 4; i++) EXPECT_EQ(req.images[i], want[i]) << b[1];
    EXPECT_EQ(req.columnar, has(b[1], "{\"inputs\": [[") || has(b[1], "{\"inputs\": {")) << b[1];
    cnn_serve_request_free(&req);
  }
  cnn_serve_request req;
  ASSERT_EQ(parse(CNN_SERVE_INFER,
                  R"({"id": "r1", "inputs": [{"name": "x", "shape": [2, 2, 2, 1], "datatype": "UINT8",
                      "data": [0, 51, 102, 255, 255, 0, 0, 0]}]})",
                  spec, &req),
            CNN_OK)
      << cnn_last_error();
  EXPECT_EQ(req.n, 2);
  EXPECT_EQ(req.images[1], 51.0f / 255.0f);
  EXPECT_EQ(req.images[4], 1.0f);
  EXPECT_STREQ(req.id, "r1");
  cnn_serve_request_free(&req);
}

TEST(ServeRequest, MalformedBodiesNameWhatIsWrong) {
  cnn_serve_spec spec = gray_spec();
  struct Case {
    cnn_serve_api api;
    const char *body;
    const char *message;
  } cases[] = {
      {CNN_SERVE_PREDICT, "{\"instances\": [", "invalid JSON"},
      {CNN_SERVE_PREDICT, "[1, 2]", "must be a JSON object"},
      {CNN_SERVE_PREDICT, "{}", "exactly one of \"instances\""},
      {CNN_SERVE_PREDICT, R"({"instances": [], "inputs": []})", "exactly one of"},
      {CNN_SERVE_PREDICT, R"({"instances": []})", "holds no images"},
      {CNN_SERVE_PREDICT, R"({"instances": [[[0, 1], [0, 1], [0, 1]]]})", "expected 2 elements"},
      {CNN_SERVE_PREDICT, R"({"instances": [[[0, "1"], [0, 1]]]})", "instances[0][0][1]: expected a number, got string"},
      {CNN_SERVE_PREDICT, R"({"instances": [[[0, 1], [0, NaN]]]})", "invalid JSON"},
      {CNN_SERVE_PREDICT, R"({"instances": [[[0, 1], [0, 1e39]]]})", "not a finite float"},
      {CNN_SERVE_PREDICT, R"({"instances": [7]})", "expected an image"},
      {CNN_SERVE_PREDICT, R"({"instances": [{"b64": "!!!!"}]})", "invalid base64"},
      {CNN_SERVE_PREDICT, R"({"instances": [{"b64": "aGVsbG8gd29ybGQ="}]})", "instances[0]"},
      {CNN_SERVE_PREDICT, R"({"instances": [{"b64": 5}]})", "must hold one string"},
      {CNN_SERVE_PREDICT, R"({"instances": [{"a": 1, "b": 2}]})", "has 2 members"},
      {CNN_SERVE_PREDICT, R"({"instances": [[[0,0],[0,0]],[[0,0],[0,0]],[[0,0],[0,0]],[[0,0],[0,0]],[[0,0],[0,0]]]})",
       "above the limit of 4"},
      {CNN_SERVE_PREDICT, R"({"signature_name": "other", "instances": [[[0, 1], [0, 1]]]})", "serving_default"},
      {CNN_SERVE_CLASSIFY, R"({"instances": [[[0, 1], [0, 1]]], "top_k": 0})", "\"top_k\""},
      {CNN_SERVE_INFER, R"({"inputs": {}})", "expected an array of tensors"},
      {CNN_SERVE_INFER, R"({"inputs": [{"shape": [1, 2, 2, 1], "datatype": "FP64", "data": [0, 0, 0, 0]}]})",
       "FP64 is not supported"},
      {CNN_SERVE_INFER, R"({"inputs": [{"shape": [1, 3, 2, 1], "datatype": "FP32", "data": [0, 0, 0, 0, 0, 0]}]})",
       "the model takes [n, 2, 2, 1]"},
      {CNN_SERVE_INFER, R"({"inputs": [{"shape": [1, 2, 2, 1], "datatype": "FP32", "data": [0, 0, 0]}]})",
       "holds 3 numbers but the shape asks for 4"},
      {CNN_SERVE_INFER, R"({"inputs": [{"shape": [1, 2, 2, 1], "datatype": "UINT8", "data": [0, 0, 0, 256]}]})",
       "not a UINT8"},
      {CNN_SERVE_INFER, R"({"inputs": [{"shape": [1, 2, 2, 1], "datatype": "FP32", "data": [0, 0, 0, true]}]})",
       "expected numbers, got boolean"},
      {CNN_SERVE_INFER, R"({"inputs": [{"shape": [1], "datatype": "BYTES", "data": [5]}]})", "base64 string"},
      {CNN_SERVE_INFER, R"({"inputs": [{"shape": [2], "datatype": "BYTES", "data": ["AAAA"]}]})", "holds 1 elements"},
      {CNN_SERVE_INFER, R"({"inputs": [{"shape": [-1, 2, 2, 1], "datatype": "FP32", "data": []}]})",
       "\"shape\"[0]"},
  };
  for (const Case &c : cases) {
    cnn_serve_request req;
    cnn_status st = parse(c.api, c.body, spec, &req);
    EXPECT_NE(st, CNN_OK) << c.body;
    EXPECT_TRUE(has(cnn_last_error(), c.message)) << c.body << "\n  gave: " << cnn_last_error();
    EXPECT_EQ(req.images, nullptr);
    EXPECT_EQ(req.n, 0);
  }
}

TEST(ServeRequest, Base64DecodesBothAlphabetsAndRefusesGarbage) {
  unsigned char *out = nullptr;
  size_t n = 0;
  // "hi?" "?>" in the standard alphabet, then with the URL-safe '-' and '_'
  for (const char *text : {"aGk/Pz8+", "aGk_Pz8-"}) {
    ASSERT_EQ(cnn_serve_base64_decode(text, 8, &out, &n), CNN_OK) << cnn_last_error();
    EXPECT_EQ(std::string((char *)out, n), std::string("hi?") + "??" + ">") << text;
    free(out);
  }
  ASSERT_EQ(cnn_serve_base64_decode("aGk/Pz8+", 8, &out, &n), CNN_OK);
  free(out);
  ASSERT_EQ(cnn_serve_base64_decode("aGk", 3, &out, &n), CNN_OK);  // unpadded
  EXPECT_EQ(std::string((char *)out, n), "hi");
  free(out);
  for (const char *bad : {"a", "aGk=a", "aG k", "aGl=", "a===", "aGk=="}) {
    EXPECT_NE(cnn_serve_base64_decode(bad, strlen(bad), &out, &n), CNN_OK) << bad;
    EXPECT_EQ(out, nullptr);
  }
}

// The fuzz harness's seeds (tests/fuzz/corpus/serve_request) reach the parser's success paths: each named for an
// API parses, with the harness's choice of API and input from the first byte.
TEST(ServeRequest, FuzzSeedsParse) {
  const std::string dir = std::string(CNN_SOURCE_DIR) + "/tests/fuzz/corpus/serve_request/";
  int parsed = 0;
  for (const char *name : {"predict_rows.txt", "predict_columns.txt", "predict_b64_gray.txt", "classify_top_k.txt",
                           "infer_uint8.txt", "infer_fp32_nested.txt", "predict_b64_rgb.txt", "infer_bytes_rgb.txt"}) {
    std::string seed = cnntest::read_file(dir + name);
    ASSERT_FALSE(seed.empty()) << name;
    unsigned char b = (unsigned char)seed[0];
    bool rgb = (b / 3) % 2;
    cnn_serve_spec spec = {rgb ? 3 : 2, rgb ? 3 : 2, rgb ? 3 : 1, rgb ? 4 : 2, rgb ? 5 : 2, 4096, 8};
    cnn_serve_request req;
    EXPECT_EQ(parse((cnn_serve_api)(b % 3), seed.substr(1), spec, &req), CNN_OK) << name << ": " << cnn_last_error();
    parsed += req.n > 0;
    cnn_serve_request_free(&req);
  }
  EXPECT_EQ(parsed, 8);
}

TEST(ServeRequest, MemoryImagesMatchFilesBitForBit) {
  TempDir tmp;
  auto px = pattern_pixels(13, 11, 3, 1);
  std::string png = tmp.file("a.png");
  ASSERT_TRUE(stbi_write_png(png.c_str(), 11, 13, 3, px.data(), 33));
  std::string bytes = cnntest::read_file(png);
  // resized to 9x7 and centre-cropped to 6x6, RGB and gray; plain resize to 8x8
  struct Size {
    int rh, rw, h, w, c;
  } sizes[] = {{9, 7, 6, 6, 3}, {9, 7, 6, 6, 1}, {8, 8, 8, 8, 3}};
  for (const Size &s : sizes) {
    std::vector<float> a((size_t)s.h * s.w * s.c), b(a.size());
    ASSERT_EQ(cnn_image_load_crop(png.c_str(), s.rh, s.rw, s.h, s.w, s.c, a.data()), CNN_OK) << cnn_last_error();
    ASSERT_EQ(cnn_image_load_crop_memory((const unsigned char *)bytes.data(), bytes.size(), "mem", 0, s.rh, s.rw, s.h,
                                         s.w, s.c, b.data()),
              CNN_OK)
        << cnn_last_error();
    EXPECT_EQ(memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << s.rh << "x" << s.rw << " c" << s.c;
  }
  std::vector<float> out(36 * 3);
  EXPECT_NE(cnn_image_load_crop_memory((const unsigned char *)bytes.data(), bytes.size(), "mem", 100, 9, 7, 6, 6, 3,
                                       out.data()),
            CNN_OK);
  EXPECT_TRUE(has(cnn_last_error(), "above the limit of 100")) << cnn_last_error();
}

// ---- an HTTP client over loopback ----------------------------------------------------------------------------------

struct Response {
  int status = 0;  // 0: no answer (connection failed or closed)
  std::string failure;  // why there is no answer, when status is 0
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

int connect_to(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval tv{10, 0};  // every read and write of the client is bounded
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (sockaddr *)&a, sizeof a) != 0) {
    // a stop or freeze of this process interrupts the call while the connection goes on: wait for it (10 s)
    pollfd p{fd, POLLOUT, 0};
    int err = errno, polled = -1;
    socklen_t len = sizeof err;
    for (int i = 0; i < 100 && err == EINTR && (polled = poll(&p, 1, 10000)) < 0 && errno == EINTR; i++) {
    }
    if (err == EINTR && polled == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
      return fd;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

// recv, again when interrupted: a socket with a receive timeout fails with EINTR when the process was stopped and
// continued (signal(7)), which a loaded CI machine does
ssize_t recv_some(int fd, char *buf, size_t n) {
  ssize_t got = -1;
  for (int i = 0; i < 100; i++) {
    got = recv(fd, buf, n, 0);
    if (got >= 0 || errno != EINTR) break;
  }
  return got;
}

// Everything the peer sends until it closes (at most `reads` reads).
std::string read_to_end(int fd, int reads, std::string *failure = nullptr) {
  std::string raw;
  char buf[65536];
  for (int i = 0; i < reads; i++) {
    ssize_t n = recv_some(fd, buf, sizeof buf);
    if (n < 0 && failure) *failure = std::string("recv: ") + strerror(errno);
    if (n <= 0) break;
    raw.append(buf, (size_t)n);
  }
  return raw;
}

bool send_all(int fd, const std::string &data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += (size_t)n;
  }
  return true;
}

Response parse_response(const std::string &raw) {
  Response r;
  size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos || raw.compare(0, 9, "HTTP/1.1 ") != 0) return r;
  r.status = atoi(raw.c_str() + 9);
  std::istringstream hs(raw.substr(0, end));
  std::string line;
  std::getline(hs, line);
  while (std::getline(hs, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon), value = line.substr(colon + 1);
    for (char &ch : name) ch = (char)tolower((unsigned char)ch);
    while (!value.empty() && (value[0] == ' ')) value.erase(0, 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == ' ')) value.pop_back();
    r.headers[name] = value;
  }
  r.body = raw.substr(end + 4);
  return r;
}

// One request on its own connection (Connection: close), read to the end; at most 10 s a read.
Response http(int port, const std::string &method, const std::string &path, const std::string &body = "",
              const std::string &extra_headers = "") {
  int fd = connect_to(port);
  if (fd < 0) {
    Response none;
    none.failure = std::string("connect: ") + strerror(errno);
    return none;
  }
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + extra_headers;
  if (method == "POST" || !body.empty()) req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  std::string raw, failure;
  if (send_all(fd, req)) {
    raw = read_to_end(fd, 100000, &failure);  // bounded: each recv waits at most 10 s, and the answer is finite
  } else {
    failure = std::string("send: ") + strerror(errno);
  }
  close(fd);
  Response r = parse_response(raw);
  if (!r.status) r.failure = failure.empty() ? std::to_string(raw.size()) + " bytes: " + raw.substr(0, 200) : failure;
  return r;
}

// ---- the server as a child process ---------------------------------------------------------------------------------

class Server {
 public:
  // Starts `cnn serve` with the arguments (an empty name: `base` is a --model-config file); waits at most 30 s for
  // its "listening on ... port N" line.
  Server(const std::string &base, const std::string &name, const std::vector<std::string> &extra) {
    bool config = name.empty();
    log_ = (config ? base.substr(0, base.rfind('/')) : base + "/..") + "/serve-" + (config ? "config" : name) + "-" +
           std::to_string(counter_++) + ".log";
    std::vector<std::string> args = {CNN_TOOL_PATH, "serve", "--port", "0", "--host", "127.0.0.1"};
    std::vector<std::string> model = {"--model-base-path", base, "--model-name", name};
    if (config) model = {"--model-config", base};
    args.insert(args.end(), model.begin(), model.end());
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        dup2(fd, 2);
        dup2(fd, 1);
      }
      std::vector<char *> argv;
      for (auto &a : args) argv.push_back((char *)a.c_str());
      argv.push_back(nullptr);
      setenv("OMP_NUM_THREADS", "1", 1);
      execv(argv[0], argv.data());
      _exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline && running()) {
      std::string text = cnntest::read_file(log_);
      size_t at = text.find("listening on 127.0.0.1 port ");
      if (at != std::string::npos && text.find('\n', at) != std::string::npos) {
        port_ = atoi(text.c_str() + at + strlen("listening on 127.0.0.1 port "));
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ~Server() {
    if (pid_ > 0 && running()) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  Server(const Server &) = delete;
  Server &operator=(const Server &) = delete;

  int port() const { return port_; }
  std::string log() const { return cnntest::read_file(log_); }
  bool running() {
    if (exited_) return false;
    int status;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      status_ = status;
      return false;
    }
    return r == 0;
  }
  void signal(int sig) {
    if (running()) kill(pid_, sig);
  }
  // SIGTERM, then waits at most `seconds` for the exit; returns the exit status (-1: still running, killed).
  int stop(int seconds = 30) {
    if (running()) kill(pid_, SIGTERM);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (running() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!exited_) return -1;
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
  }

 private:
  static int counter_;
  std::string log_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool exited_ = false;
  int status_ = 0;
};
int Server::counter_ = 0;

#define REQUIRE_SERVE()                                                                    \
  do {                                                                                     \
    if (!cnn_serve_available()) GTEST_SKIP() << "this build has no libmicrohttpd: no cnn serve"; \
  } while (0)

// A served gray model (version 1) in a temporary directory.
struct GrayFixture {
  TempDir tmp;
  std::string base = tmp.file("models");
  std::string model = make_model(base, 1, kGray, kClassNames);
};

std::string gray_instances(int n) {
  std::string body = "{\"instances\": [";
  for (int i = 0; i < n; i++) body += (i ? "," : "") + constant_image_json(8, 8, 1, 0.1 * (i + 1));
  return body + "]}";
}

std::vector<float> gray_images(int n) {
  std::vector<float> images;
  for (int i = 0; i < n; i++) images.insert(images.end(), 64, (float)(0.1 * (i + 1)));
  return images;
}

TEST(Serve, ABuildWithoutTheServerSaysSo) {
  if (cnn_serve_available()) GTEST_SKIP() << "this build has the server";
  GrayFixture f;
  std::string out;
  EXPECT_EQ(cnntest::run_cnn({"serve", "--model-base-path", f.base, "--model-name", "gray", "--port", "0"}, &out), 1);
  EXPECT_TRUE(has(out, "configured without libmicrohttpd")) << out;
  cnn_serve_config cfg;
  cnn_serve_config_default(&cfg);
  cfg.model_base_path = f.base.c_str();
  cfg.model_name = "gray";
  cnn_server *server = nullptr;
  EXPECT_EQ(cnn_server_start(&cfg, &server), CNN_ERR_UNSUPPORTED);
  EXPECT_EQ(server, nullptr);
}

TEST(Serve, TheLibraryServesInProcess) {
  REQUIRE_SERVE();
  GrayFixture f;
  cnn_serve_config cfg;
  cnn_serve_config_default(&cfg);
  cfg.model_base_path = f.base.c_str();
  cfg.model_name = "gray";
  cfg.port = 0;
  cfg.poll_seconds = 0;
  cfg.quiet = 1;
  cnn_server *server = nullptr;
  ASSERT_EQ(cnn_server_start(&cfg, &server), CNN_OK) << cnn_last_error();
  int port = cnn_server_port(server);
  EXPECT_GT(port, 0);
  EXPECT_EQ(http(port, "GET", "/v2/health/ready").status, 200);
  Response r = http(port, "POST", "/v1/models/gray:predict", gray_instances(2));
  EXPECT_EQ(r.status, 200) << r.body;
  cnn_server_stop(server, 5000);
  EXPECT_EQ(http(port, "GET", "/v2/health/live").status, 0);  // no one listens any more
  cfg.model_name = "a/b";
  EXPECT_EQ(cnn_server_start(&cfg, &server), CNN_ERR_INVALID_ARG);
  EXPECT_TRUE(has(cnn_last_error(), "may not hold")) << cnn_last_error();
}

TEST(Serve, StatusMetadataAndHealthEndpoints) {
  REQUIRE_SERVE();
  GrayFixture f;
  Server s(f.base, "gray", {});
  ASSERT_GT(s.port(), 0) << s.log();

  Response r = http(s.port(), "GET", "/v1/models/gray");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["content-type"], "application/json");
  {
    Json j(r.body);
    const cnn_json *st = cnn_json_at(cnn_json_get(j.doc, "model_version_status"), 0);
    EXPECT_EQ(string_of(cnn_json_get(st, "version")), "1");
    EXPECT_EQ(string_of(cnn_json_get(st, "state")), "AVAILABLE");
    EXPECT_EQ(string_of(cnn_json_get(cnn_json_get(st, "status"), "error_code")), "OK");
  }
  EXPECT_EQ(http(s.port(), "GET", "/v1/models/gray/versions/1").status, 200);

  r = http(s.port(), "GET", "/v1/models/gray/metadata");
  ASSERT_EQ(r.status, 200) << r.body;
  {
    Json j(r.body);
    const cnn_json *sig = cnn_json_get(
        cnn_json_get(cnn_json_get(cnn_json_get(j.doc, "metadata"), "signature_def"), "signature_def"), "serving_default");
    const cnn_json *in = cnn_json_get(cnn_json_get(sig, "inputs"), "input");
    EXPECT_EQ(string_of(cnn_json_get(in, "dtype")), "DT_FLOAT");
    const cnn_json *dims = cnn_json_get(cnn_json_get(in, "tensor_shape"), "dim");
    ASSERT_EQ(cnn_json_count(dims), 4u);
    EXPECT_EQ(string_of(cnn_json_get(cnn_json_at(dims, 1), "size")), "8");
    const cnn_json *names = cnn_json_get(cnn_json_get(j.doc, "metadata"), "class_names");
    ASSERT_EQ(cnn_json_count(names), 3u);
    EXPECT_EQ(string_of(cnn_json_at(names, 2)), "bird");
  }
  EXPECT_EQ(http(s.port(), "GET", "/v1/models/gray/versions/1/metadata").status, 200);

  r = http(s.port(), "GET", "/v2/models/gray");
  ASSERT_EQ(r.status, 200) << r.body;
  {
    Json j(r.body);
    EXPECT_EQ(string_of(cnn_json_get(j.doc, "name")), "gray");
    EXPECT_EQ(string_of(cnn_json_at(cnn_json_get(j.doc, "versions"), 0)), "1");
    const cnn_json *in = cnn_json_at(cnn_json_get(j.doc, "inputs"), 0);
    EXPECT_EQ(string_of(cnn_json_get(in, "datatype")), "FP32");
    int64_t d = 0;
    EXPECT_TRUE(cnn_json_int64(cnn_json_at(cnn_json_get(in, "shape"), 3), &d));
    EXPECT_EQ(d, 1);
    const cnn_json *out = cnn_json_at(cnn_json_get(j.doc, "outputs"), 0);
    EXPECT_TRUE(cnn_json_int64(cnn_json_at(cnn_json_get(out, "shape"), 1), &d));
    EXPECT_EQ(d, 3);
  }
  EXPECT_EQ(http(s.port(), "GET", "/v2/models/gray/versions/1").status, 200);
  r = http(s.port(), "GET", "/v2/models/gray/ready");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(has(r.body, "\"ready\":true")) << r.body;
  EXPECT_EQ(http(s.port(), "GET", "/v2/models/gray/versions/1/ready").status, 200);
  r = http(s.port(), "GET", "/v2/health/live");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(has(r.body, "\"live\":true")) << r.body;
  r = http(s.port(), "GET", "/v2/health/ready");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(has(r.body, "\"ready\":true")) << r.body;
  r = http(s.port(), "GET", "/v2");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(has(r.body, "\"name\":\"cnn.c\"")) << r.body;
  EXPECT_EQ(s.stop(), 0) << s.log();
}

TEST(Serve, PredictClassifyAndInferMatchTheLibrary) {
  REQUIRE_SERVE();
  GrayFixture f;
  Server s(f.base, "gray", {});
  ASSERT_GT(s.port(), 0) << s.log();
  const int n = 3;
  std::vector<float> want = predict_local(f.model, gray_images(n), n);

  Response r = http(s.port(), "POST", "/v1/models/gray:predict", gray_instances(n));
  ASSERT_EQ(r.status, 200) << r.body;
  {
    Json j(r.body);
    auto rows = rows_of(cnn_json_get(j.doc, "predictions"));
    ASSERT_EQ(rows.size(), (size_t)n) << r.body;
    for (int i = 0; i < n; i++)
      for (int k = 0; k < 3; k++) EXPECT_NEAR(rows[i][k], want[i * 3 + k], 1e-6) << i << "," << k;
  }
  // columnar: "inputs" in, "outputs" out; and a specific version
  std::string columnar = "{\"inputs\": [" + constant_image_json(8, 8, 1, 0.1) + "]}";
  r = http(s.port(), "POST", "/v1/models/gray/versions/1:predict", columnar);
  ASSERT_EQ(r.status, 200) << r.body;
  {
    Json j(r.body);
    auto rows = rows_of(cnn_json_get(j.doc, "outputs"));
    ASSERT_EQ(rows.size(), 1u) << r.body;
    for (int k = 0; k < 3; k++) EXPECT_NEAR(rows[0][k], want[k], 1e-6);
  }
  // classify: top-k with labels, best first
  r = http(s.port(), "POST", "/v1/models/gray:classify",
           "{\"top_k\": 2, \"instances\": [" + constant_image_json(8, 8, 1, 0.2) + "]}");
  ASSERT_EQ(r.status, 200) << r.body;
  {
    Json j(r.body);
    const cnn_json *top = cnn_json_at(cnn_json_get(j.doc, "result"), 0);
    ASSERT_EQ(cnn_json_count(top), 2u) << r.body;
    int best = 0;
    for (int k = 1; k < 3; k++)
      if (want[3 + k] > want[3 + best]) best = k;
    const char *names[] = {"cat", "dog", "bird"};
    EXPECT_EQ(string_of(cnn_json_at(cnn_json_at(top, 0), 0)), names[best]);
    double p0 = 0, p1 = 0;
    cnn_json_double(cnn_json_at(cnn_json_at(top, 0), 1), &p0);
    cnn_json_double(cnn_json_at(cnn_json_at(top, 1), 1), &p1);
    EXPECT_NEAR(p0, want[3 + best], 1e-6);
    EXPECT_GE(p0, p1);
  }
  // the inference protocol, FP32
  std::string data;
  for (int i = 0; i < 64; i++) data += (i ? "," : "") + std::string("0.3");
  r = http(s.port(), "POST", "/v2/models/gray/infer",
           "{\"id\": \"q7\", \"inputs\": [{\"name\": \"input\", \"shape\": [1, 8, 8, 1], \"datatype\": \"FP32\", "
           "\"data\": [" + data + "]}]}");
  ASSERT_EQ(r.status, 200) << r.body;
  {
    Json j(r.body);
    EXPECT_EQ(string_of(cnn_json_get(j.doc, "id")), "q7");
    EXPECT_EQ(string_of(cnn_json_get(j.doc, "model_name")), "gray");
    EXPECT_EQ(string_of(cnn_json_get(j.doc, "model_version")), "1");
    const cnn_json *out = cnn_json_at(cnn_json_get(j.doc, "outputs"), 0);
    EXPECT_EQ(string_of(cnn_json_get(out, "datatype")), "FP32");
    std::vector<float> w3 = predict_local(f.model, std::vector<float>(64, 0.3f), 1);
    const cnn_json *d = cnn_json_get(out, "data");
    ASSERT_EQ(cnn_json_count(d), 3u);
    for (int k = 0; k < 3; k++) {
      double v = 0;
      cnn_json_double(cnn_json_at(d, k), &v);
      EXPECT_NEAR(v, w3[k], 1e-6);
    }
  }
  // UINT8: 51 is 0.2 in the [0, 1] scale
  data.clear();
  for (int i = 0; i < 64; i++) data += (i ? "," : "") + std::string("51");
  r = http(s.port(), "POST", "/v2/models/gray/versions/1/infer",
           "{\"inputs\": [{\"name\": \"input\", \"shape\": [1, 8, 8], \"datatype\": \"UINT8\", \"data\": [" + data +
               "]}]}");
  ASSERT_EQ(r.status, 200) << r.body;
  {
    Json j(r.body);
    std::vector<float> w2 = predict_local(f.model, std::vector<float>(64, 51.0f / 255.0f), 1);
    const cnn_json *d = cnn_json_get(cnn_json_at(cnn_json_get(j.doc, "outputs"), 0), "data");
    for (int k = 0; k < 3; k++) {
      double v = 0;
      cnn_json_double(cnn_json_at(d, k), &v);
      EXPECT_NEAR(v, w2[k], 1e-6);
    }
  }
  EXPECT_EQ(s.stop(), 0) << s.log();
}

// The probabilities `cnn predict` prints for an image file (4 decimals), by class index.
std::map<int, double> cnn_predict_output(const std::string &model, const std::string &image, int k) {
  std::string out;
  EXPECT_EQ(cnntest::run_cnn({"predict", "--model", model, "--top", std::to_string(k), "--device", "cpu", image}, &out),
            0)
      << out;
  std::map<int, double> probs;
  std::istringstream is(out);
  std::string line;
  while (std::getline(is, line)) {
    size_t at = line.find("(class ");
    if (at == std::string::npos) continue;
    int cls = atoi(line.c_str() + at + 7);
    size_t close = line.find(')', at);
    probs[cls] = atof(line.c_str() + close + 1);
  }
  return probs;
}

TEST(Serve, Base64ImagesGiveWhatCnnPredictGives) {
  REQUIRE_SERVE();
  TempDir tmp;
  std::string base = tmp.file("models");
  std::string model = make_model(base, 3, kRgb, kResizeAndNormalization);
  Server s(base, "rgb", {});
  ASSERT_GT(s.port(), 0) << s.log();
  // a PNG, a JPEG, a BMP and a gray PNG (converted to RGB), of sizes that are resized and cropped
  std::vector<std::string> files;
  auto px = pattern_pixels(15, 12, 3, 2);
  files.push_back(tmp.file("a.png"));
  ASSERT_TRUE(stbi_write_png(files.back().c_str(), 12, 15, 3, px.data(), 36));
  files.push_back(tmp.file("b.jpg"));
  ASSERT_TRUE(stbi_write_jpg(files.back().c_str(), 12, 15, 3, px.data(), 90));
  files.push_back(tmp.file("c.bmp"));
  ASSERT_TRUE(stbi_write_bmp(files.back().c_str(), 12, 15, 3, px.data()));
  auto gray = pattern_pixels(5, 4, 1, 3);
  files.push_back(tmp.file("d.png"));
  ASSERT_TRUE(stbi_write_png(files.back().c_str(), 4, 5, 1, gray.data(), 4));

  std::string instances, bytes_data;
  for (size_t i = 0; i < files.size(); i++) {
    std::string b64 = base64(cnntest::read_file(files[i]));
    instances += (i ? "," : "") + std::string("{\"b64\": \"") + b64 + "\"}";
    bytes_data += (i ? "," : "") + std::string("\"") + b64 + "\"";
  }
  Response r = http(s.port(), "POST", "/v1/models/rgb:predict", "{\"instances\": [" + instances + "]}");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j(r.body);
  auto rows = rows_of(cnn_json_get(j.doc, "predictions"));
  ASSERT_EQ(rows.size(), files.size()) << r.body;
  Response r2 = http(s.port(), "POST", "/v2/models/rgb/infer",
                     "{\"inputs\": [{\"name\": \"input\", \"shape\": [" + std::to_string(files.size()) +
                         "], \"datatype\": \"BYTES\", \"data\": [" + bytes_data + "]}]}");
  ASSERT_EQ(r2.status, 200) << r2.body;
  Json j2(r2.body);
  const cnn_json *d2 = cnn_json_get(cnn_json_at(cnn_json_get(j2.doc, "outputs"), 0), "data");
  ASSERT_EQ(cnn_json_count(d2), files.size() * 4);
  for (size_t i = 0; i < files.size(); i++) {
    // the library's path of cnn predict, exactly: the file decoded, resized, cropped, then normalized and run
    std::vector<float> img(6 * 6 * 3);
    ASSERT_EQ(cnn_image_load_crop(files[i].c_str(), 9, 7, 6, 6, 3, img.data()), CNN_OK) << cnn_last_error();
    std::vector<float> want = predict_local(model, img, 1);
    // and the program itself (4 decimals)
    std::map<int, double> printed = cnn_predict_output(model, files[i], 4);
    ASSERT_EQ(printed.size(), 4u) << files[i];
    for (int k = 0; k < 4; k++) {
      EXPECT_NEAR(rows[i][k], want[k], 1e-6) << files[i] << " class " << k;
      EXPECT_NEAR(rows[i][k], printed[k], 5.001e-5) << files[i] << " class " << k;
      double v = 0;
      cnn_json_double(cnn_json_at(d2, i * 4 + k), &v);
      EXPECT_NEAR(v, want[k], 1e-6) << files[i] << " class " << k << " (BYTES)";
    }
  }
  EXPECT_EQ(s.stop(), 0) << s.log();
}

TEST(Serve, MalformedRequestsGetTheir4xxAndTheServerKeepsServing) {
  REQUIRE_SERVE();
  GrayFixture f;
  Server s(f.base, "gray", {"--max-body-bytes", "65536", "--max-pixels", "100", "--max-batch-size", "4"});
  ASSERT_GT(s.port(), 0) << s.log();
  auto big_png = pattern_pixels(11, 11, 1, 4);  // 121 pixels: above --max-pixels 100
  std::string big = f.tmp.file("big.png");
  ASSERT_TRUE(stbi_write_png(big.c_str(), 11, 11, 1, big_png.data(), 11));
  std::string png_bytes = cnntest::read_file(big);
  std::string corrupt = png_bytes.substr(0, 40);  // a PNG header and then nothing

  struct Case {
    std::string method, path, body;
    int status;
    std::string message;
  } cases[] = {
      {"POST", "/v1/models/gray:predict", "{\"instances\": [", 400, "invalid JSON"},
      {"POST", "/v1/models/gray:predict", "", 400, "invalid JSON"},
      {"POST", "/v1/models/gray:predict", "{\"instances\": [[[1, 2], [3, 4]]]}", 400, "expected 8 elements"},
      {"POST", "/v1/models/gray:predict", "{\"instances\": [" + constant_image_json(8, 8, 2, 0) + "]}", 400,
       "expected 1 elements"},
      {"POST", "/v1/models/gray:predict", "{\"instances\": \"cat\"}", 400, "expected an array"},
      {"POST", "/v1/models/gray:predict", "{\"instances\": [true]}", 400, "expected an image"},
      {"POST", "/v1/models/gray:predict", "{\"instances\": [" + constant_image_json(8, 8, 1, 0) + "], \"x\": NaN}",
       400, "invalid JSON"},
      {"POST", "/v1/models/gray:predict", "{\"instances\": [" + constant_image_json(8, 8, 1, 1e300) + "]}", 400,
       "not a finite float"},
      {"POST", "/v1/models/gray:predict", "{\"instances\": []}", 400, "holds no images"},
      {"POST", "/v1/models/gray:predict", gray_instances(5), 400, "above the limit of 4"},
      {"POST", "/v1/models/gray:predict", "{\"instances\": [{\"b64\": \"not base64!\"}]}", 400, "invalid base64"},
      {"POST", "/v1/models/gray:predict", "{\"instances\": [{\"b64\": \"" + base64(corrupt) + "\"}]}", 400,
       "instances[0]"},
      {"POST", "/v1/models/gray:predict", "{\"instances\": [{\"b64\": \"" + base64("GIF89a....") + "\"}]}", 400,
       "only PNG, JPEG and BMP"},
      {"POST", "/v1/models/gray:predict", "{\"instances\": [{\"b64\": \"" + base64(png_bytes) + "\"}]}", 400,
       "above the limit of 100"},
      {"POST", "/v1/models/gray:predict", std::string(70000, ' '), 413, "larger than the limit of 65536"},
      {"POST", "/v1/models/cat:predict", gray_instances(1), 404, "model 'cat' is not served here"},
      {"POST", "/v1/models/gray/versions/9:predict", gray_instances(1), 404, "version 9 is not found"},
      {"POST", "/v1/models/gray/versions/x:predict", gray_instances(1), 404, "decimal number"},
      {"GET", "/v1/models/gray/versions/9", "", 404, "has no version 9"},
      {"GET", "/v1/models/gray/labels/stable", "", 404, "has no version label 'stable'"},
      {"GET", "/v2/models/gray/versions/2/ready", "", 404, "not found"},
      {"POST", "/v2/models/gray/infer", "{\"inputs\": [{\"shape\": [1], \"datatype\": \"BYTES\", \"data\": [\"@@\"]}]}",
       400, "invalid base64"},
      {"POST", "/v2/models/gray/infer", "{\"inputs\": [{\"shape\": [1, 8, 8, 1], \"datatype\": \"INT64\", "
                                        "\"data\": [1]}]}", 400, "INT64 is not supported"},
      {"GET", "/v1/models/gray:predict", "", 405, "takes POST"},
      {"POST", "/v1/models/gray", "{}", 405, "takes GET"},
      {"DELETE", "/v2/health/live", "", 405, "takes GET"},
      {"GET", "/v1/models/gray:regress", "", 404, "no such path"},
      {"GET", "/v3/anything", "", 404, "no such path"},
      {"GET", "/", "", 404, "no such path"},
  };
  for (const Case &c : cases) {
    Response r = http(s.port(), c.method, c.path, c.body);
    EXPECT_EQ(r.status, c.status) << c.method << " " << c.path << " " << c.body.substr(0, 80) << "\n  " << r.body;
    EXPECT_TRUE(has(r.body, c.message)) << c.path << ": " << r.body;
    Json j(r.body);
    EXPECT_NE(cnn_json_get(j.doc, "error"), nullptr) << r.body;
    if (c.status == 405) {
      EXPECT_FALSE(r.headers["allow"].empty());
    }
    // and the server goes on answering
    ASSERT_EQ(http(s.port(), "POST", "/v1/models/gray:predict", gray_instances(1)).status, 200)
        << "after " << c.path << "\n" << s.log();
  }
  // a chunked body that grows past the limit is refused too
  {
    int fd = connect_to(s.port());
    ASSERT_GE(fd, 0);
    std::string chunk(32768, ' ');
    char size[16];
    snprintf(size, sizeof size, "%zx\r\n", chunk.size());
    std::string req = "POST /v1/models/gray:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 3; i++) req += size + chunk + "\r\n";
    req += "0\r\n\r\n";
    EXPECT_TRUE(send_all(fd, req));
    std::string raw = read_to_end(fd, 1000);
    close(fd);
    EXPECT_EQ(parse_response(raw).status, 413) << raw;
  }
  EXPECT_EQ(http(s.port(), "POST", "/v1/models/gray:predict", gray_instances(2)).status, 200);
  EXPECT_EQ(s.stop(), 0) << s.log();
}

// The value of the sample `line_start` ("name{labels}") in a Prometheus text, or -1 when it is not there.
double metric(const std::string &text, const std::string &line_start) {
  size_t at = text.find("\n" + line_start + " ");
  if (at == std::string::npos) return -1;
  return atof(text.c_str() + at + 1 + line_start.size() + 1);
}

TEST(Serve, MetricsCountRequestsBatchesAndMemory) {
  REQUIRE_SERVE();
  GrayFixture f;
  Server s(f.base, "gray", {});
  ASSERT_GT(s.port(), 0) << s.log();
  for (int i = 0; i < 3; i++) ASSERT_EQ(http(s.port(), "POST", "/v1/models/gray:predict", gray_instances(2)).status, 200);
  ASSERT_EQ(http(s.port(), "POST", "/v1/models/gray:predict", "{").status, 400);
  ASSERT_EQ(http(s.port(), "GET", "/nowhere").status, 404);
  Response r = http(s.port(), "GET", "/monitoring/prometheus/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_TRUE(has(r.headers["content-type"], "text/plain")) << r.headers["content-type"];
  const std::string &t = r.body;
  EXPECT_EQ(metric(t, "cnn_serve_requests_total{model=\"gray\",version=\"1\",api=\"predict\",code=\"200\"}"), 3) << t;
  EXPECT_EQ(metric(t, "cnn_serve_requests_total{model=\"gray\",version=\"1\",api=\"predict\",code=\"400\"}"), 1) << t;
  EXPECT_EQ(metric(t, "cnn_serve_requests_total{model=\"\",version=\"\",api=\"unknown\",code=\"404\"}"), 1) << t;
  EXPECT_EQ(metric(t, "cnn_serve_request_duration_seconds_count{model=\"gray\",api=\"predict\"}"), 4) << t;
  EXPECT_EQ(metric(t, "cnn_serve_request_duration_seconds_bucket{model=\"gray\",api=\"predict\",le=\"+Inf\"}"), 4) << t;
  // three requests of two images: three forward passes of 2 (the warm-up pass at load is not counted)
  EXPECT_EQ(metric(t, "cnn_serve_batch_size_count{model=\"gray\",version=\"1\"}"), 3) << t;
  EXPECT_EQ(metric(t, "cnn_serve_batch_size_sum{model=\"gray\",version=\"1\"}"), 6) << t;
  EXPECT_EQ(metric(t, "cnn_serve_batch_size_bucket{model=\"gray\",version=\"1\",le=\"1\"}"), 0) << t;
  EXPECT_EQ(metric(t, "cnn_serve_batch_size_bucket{model=\"gray\",version=\"1\",le=\"2\"}"), 3) << t;
  EXPECT_EQ(metric(t, "cnn_serve_queue_images{model=\"gray\",version=\"1\"}"), 0) << t;
  EXPECT_EQ(metric(t, "cnn_serve_model_loads_total{model=\"gray\",result=\"ok\"}"), 1) << t;
  EXPECT_GT(metric(t, "process_resident_memory_bytes"), 1e6) << t;
  // every sample's family was declared before it
  std::istringstream is(t);
  std::string line, declared;
  while (std::getline(is, line)) {
    if (line.rfind("# TYPE ", 0) == 0) declared += " " + line.substr(7, line.find(' ', 7) - 7) + " ";
    if (line.empty() || line[0] == '#') continue;
    std::string name = line.substr(0, line.find_first_of("{ "));
    for (const char *suffix : {"_bucket", "_sum", "_count"})
      if (name.size() > strlen(suffix) && name.compare(name.size() - strlen(suffix), std::string::npos, suffix) == 0 &&
          !has(declared, " " + name + " "))
        name = name.substr(0, name.size() - strlen(suffix));
    EXPECT_TRUE(has(declared, " " + name + " ")) << line;
  }
  EXPECT_EQ(s.stop(), 0) << s.log();
}

// Sends the requests at once, one thread each (started together), and returns their answers in order.
std::vector<Response> concurrently(int port, const std::string &path, const std::vector<std::string> &bodies) {
  std::vector<Response> out(bodies.size());
  std::vector<std::thread> threads;
  std::atomic<int> ready{0};
  for (size_t i = 0; i < bodies.size(); i++)
    threads.emplace_back([&, i] {
      ready++;
      for (int spin = 0; spin < 2000 && ready.load() < (int)bodies.size(); spin++)
        std::this_thread::sleep_for(std::chrono::microseconds(500));
      out[i] = http(port, "POST", path, bodies[i]);
    });
  for (auto &t : threads) t.join();
  return out;
}

TEST(Serve, ConcurrentRequestsRunInFewerBatchesWithTheAnswersOfSingleImages) {
  REQUIRE_SERVE();
  GrayFixture f;
  // a batch waits up to 1 s to fill: requests sent together share forward passes
  Server s(f.base, "gray", {"--max-batch-size", "16", "--batch-timeout-us", "1000000", "--http-threads", "4"});
  ASSERT_GT(s.port(), 0) << s.log();
  // eight requests of 1, 2 or 3 images, every image different
  std::vector<std::string> bodies;
  std::vector<std::vector<float>> images;
  int total = 0;
  for (int r = 0; r < 8; r++) {
    int n = 1 + r % 3;
    std::string body = "{\"instances\": [";
    std::vector<float> img;
    for (int i = 0; i < n; i++) {
      std::string inst = "[";
      for (int y = 0; y < 8; y++) {
        inst += y ? ",[" : "[";
        for (int x = 0; x < 8; x++) {
          float v = (float)((r * 31 + i * 17 + y * 8 + x) % 97) / 96.0f;
          img.push_back(v);
          char buf[32];
          snprintf(buf, sizeof buf, "%s%.9g", x ? "," : "", v);
          inst += buf;
        }
        inst += "]";
      }
      body += (i ? "," : "") + inst + "]";
    }
    bodies.push_back(body + "]}");
    images.push_back(img);
    total += n;
  }
  std::vector<Response> answers = concurrently(s.port(), "/v1/models/gray:predict", bodies);
  bool identical = true;
  double max_diff = 0;
  for (size_t r = 0; r < answers.size(); r++) {
    ASSERT_EQ(answers[r].status, 200) << answers[r].body;
    Json j(answers[r].body);
    auto rows = rows_of(cnn_json_get(j.doc, "predictions"));
    int n = (int)images[r].size() / 64;
    ASSERT_EQ((int)rows.size(), n);
    for (int i = 0; i < n; i++) {
      // the same image predicted alone, through the library
      std::vector<float> one(images[r].begin() + i * 64, images[r].begin() + (i + 1) * 64);
      std::vector<float> want = predict_local(f.model, one, 1);
      for (int k = 0; k < 3; k++) {
        EXPECT_NEAR(rows[i][k], want[k], 1e-5) << "request " << r << " image " << i << " class " << k;
        identical = identical && rows[i][k] == want[k];
        max_diff = std::max(max_diff, (double)std::fabs(rows[i][k] - want[k]));
      }
    }
  }
  printf("batched answers %s the single-image ones (largest difference %.3g)\n",
         identical ? "are bit-identical to" : "differ from", max_diff);
  Response m = http(s.port(), "GET", "/monitoring/prometheus/metrics");
  double batches = metric(m.body, "cnn_serve_batch_size_count{model=\"gray\",version=\"1\"}");
  double imgs = metric(m.body, "cnn_serve_batch_size_sum{model=\"gray\",version=\"1\"}");
  EXPECT_EQ(imgs, total) << m.body;
  EXPECT_GE(batches, 1);
  EXPECT_LT(batches, 8) << "eight requests sent together ran as " << batches << " forward passes\n" << m.body;
  printf("eight requests of %d images ran as %g forward passes\n", total, batches);
  EXPECT_EQ(s.stop(), 0) << s.log();
}

TEST(Serve, AFullQueueAnswers503WithRetryAfterAndServingGoesOn) {
  REQUIRE_SERVE();
  TempDir tmp;
  std::string base = tmp.file("models");
  // a model slow enough (tens of ms an image on one thread) that a burst finds the one-image queue full
  make_model(base, 1, "input 64 64 3\nconv 32 3 relu\nconv 32 3 relu\nconv 32 3 relu\nflatten\ndense 2 softmax\n", kNothing);
  Server s(base, "slow", {"--max-batch-size", "1", "--max-enqueued-batches", "1", "--http-threads", "4"});
  ASSERT_GT(s.port(), 0) << s.log();
  auto px = pattern_pixels(64, 64, 3, 5);
  std::string png = tmp.file("x.png");
  ASSERT_TRUE(stbi_write_png(png.c_str(), 64, 64, 3, px.data(), 64 * 3));
  std::string body = "{\"instances\": [{\"b64\": \"" + base64(cnntest::read_file(png)) + "\"}]}";
  std::vector<Response> answers = concurrently(s.port(), "/v1/models/slow:predict", std::vector<std::string>(24, body));
  int ok = 0, full = 0;
  for (const Response &r : answers) {
    if (r.status == 200) ok++;
    if (r.status == 503) {
      full++;
      EXPECT_EQ(r.headers.at("retry-after"), "1");
      EXPECT_TRUE(has(r.body, "is full")) << r.body;
    }
    EXPECT_TRUE(r.status == 200 || r.status == 503) << r.status << " " << r.body;
  }
  printf("24 requests at once: %d answered, %d refused with 503\n", ok, full);
  EXPECT_GE(ok, 1);
  EXPECT_GE(full, 1) << "24 requests at once never found the queue full";
  EXPECT_EQ(http(s.port(), "POST", "/v1/models/slow:predict", body).status, 200);
  Response m = http(s.port(), "GET", "/monitoring/prometheus/metrics");
  EXPECT_EQ(metric(m.body, "cnn_serve_requests_total{model=\"slow\",version=\"1\",api=\"predict\",code=\"503\"}"), full)
      << m.body;
  EXPECT_EQ(s.stop(), 0) << s.log();
}

TEST(Serve, TheBearerTokenIsNeededEverywhereButHealth) {
  REQUIRE_SERVE();
  GrayFixture f;
  const std::string token = "s3cret-token-0123456789";
  cnntest::write_file(f.tmp.file("token"), token + "\n");
  Server s(f.base, "gray", {"--auth-token-file", f.tmp.file("token")});
  ASSERT_GT(s.port(), 0) << s.log();
  const std::string good = "Authorization: Bearer " + token + "\r\n";
  struct Case {
    std::string method, path, body;
  } guarded[] = {
      {"GET", "/v1/models/gray", ""},
      {"GET", "/v1/models/gray/metadata", ""},
      {"POST", "/v1/models/gray:predict", gray_instances(1)},
      {"POST", "/v1/models/gray:classify", gray_instances(1)},
      {"GET", "/v2", ""},
      {"GET", "/v2/models/gray", ""},
      {"GET", "/v2/models/gray/ready", ""},
      {"GET", "/monitoring/prometheus/metrics", ""},
      {"GET", "/nowhere", ""},
  };
  const std::string wrong[] = {"", "Authorization: Bearer " + token.substr(1) + "x\r\n",
                               "Authorization: Bearer " + token + "x\r\n", "Authorization: Basic " + token + "\r\n",
                               "Authorization: bearer " + token + "\r\n"};
  for (const Case &c : guarded) {
    for (const std::string &h : wrong) {
      Response r = http(s.port(), c.method, c.path, c.body, h);
      EXPECT_EQ(r.status, 401) << c.path << " with [" << h << "]: " << r.body;
      EXPECT_EQ(r.headers["www-authenticate"], "Bearer");
      EXPECT_TRUE(has(r.body, "\"error\"")) << r.body;
    }
    Response r = http(s.port(), c.method, c.path, c.body, good);
    EXPECT_EQ(r.status, c.path == "/nowhere" ? 404 : 200) << c.path << ": " << r.body;
  }
  EXPECT_EQ(http(s.port(), "GET", "/v2/health/live").status, 200);
  EXPECT_EQ(http(s.port(), "GET", "/v2/health/ready").status, 200);
  EXPECT_EQ(s.stop(), 0) << s.log();

  std::string out;
  cnntest::write_file(f.tmp.file("short"), "abc\n");
  EXPECT_EQ(cnntest::run_cnn({"serve", "--model-base-path", f.base, "--model-name", "gray", "--port", "0",
                              "--auth-token-file", f.tmp.file("short")},
                             &out),
            2);
  EXPECT_TRUE(has(out, "at least 16 printable characters")) << out;
}

// Runs a shell command; its stdout (at most 1 MiB).
std::string shell(const std::string &cmd) {
  std::string out;
  FILE *p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0 && out.size() < (1u << 20)) out.append(buf, n);
  pclose(p);
  return out;
}

TEST(Serve, TlsServesHttpsOnly) {
  REQUIRE_SERVE();
  if (system("command -v openssl >/dev/null 2>&1 && command -v curl >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "openssl and curl (the programs) make the certificate and speak TLS here; one is missing";
  GrayFixture f;
  std::string cert = f.tmp.file("cert.pem"), key = f.tmp.file("key.pem");
  ASSERT_EQ(system(("openssl req -x509 -newkey rsa:2048 -nodes -keyout '" + key + "' -out '" + cert +
                    "' -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1")
                       .c_str()),
            0);
  Server s(f.base, "gray", {"--tls-cert", cert, "--tls-key", key});
  ASSERT_GT(s.port(), 0) << s.log();
  EXPECT_TRUE(has(s.log(), "(HTTPS)")) << s.log();
  std::string url = "https://127.0.0.1:" + std::to_string(s.port());
  // curl checks the certificate against the one made here; every call is bounded by --max-time
  std::string curl = "curl -s --max-time 10 --cacert '" + cert + "' -w ' %{http_code}' ";
  EXPECT_EQ(shell(curl + url + "/v2/health/live"), "{\"live\":true} 200");
  cnntest::write_file(f.tmp.file("body.json"), gray_instances(2));
  std::string out = shell(curl + "-d @'" + f.tmp.file("body.json") + "' " + url + "/v1/models/gray:predict");
  EXPECT_TRUE(has(out, "\"predictions\"") && has(out, " 200")) << out;
  EXPECT_TRUE(has(shell(curl + url + "/v1/models/nope"), " 404"));
  // plain HTTP gets no answer
  EXPECT_EQ(http(s.port(), "GET", "/v2/health/live").status, 0);
  EXPECT_TRUE(has(shell(curl + url + "/v2/health/ready"), " 200"));
  EXPECT_EQ(s.stop(), 0) << s.log();

  std::string msg;
  EXPECT_EQ(cnntest::run_cnn({"serve", "--model-base-path", f.base, "--model-name", "gray", "--port", "0",
                              "--tls-cert", cert},
                             &msg),
            1);
  EXPECT_TRUE(has(msg, "needs both a certificate")) << msg;
  EXPECT_EQ(cnntest::run_cnn({"serve", "--model-base-path", f.base, "--model-name", "gray", "--port", "0",
                              "--tls-cert", f.base + "/1/model.safetensors", "--tls-key", key},
                             &msg),
            1);
  EXPECT_TRUE(has(msg, "not a PEM file")) << msg;
}

TEST(Serve, TheAccessLogHasALinePerRequest) {
  REQUIRE_SERVE();
  GrayFixture f;
  std::string log = f.tmp.file("access.log");
  Server s(f.base, "gray", {"--access-log", log});
  ASSERT_GT(s.port(), 0) << s.log();
  EXPECT_EQ(http(s.port(), "POST", "/v1/models/gray:predict", gray_instances(1)).status, 200);
  EXPECT_EQ(http(s.port(), "GET", "/v1/models/gray/versions/7").status, 404);
  EXPECT_EQ(http(s.port(), "GET", "/v2/health/live").status, 200);
  EXPECT_EQ(s.stop(), 0) << s.log();
  std::istringstream is(cnntest::read_file(log));
  std::vector<std::string> lines;
  for (std::string line; std::getline(is, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 3u) << cnntest::read_file(log);
  EXPECT_TRUE(has(lines[0], " 127.0.0.1 \"POST /v1/models/gray:predict\" 200 ")) << lines[0];
  EXPECT_TRUE(has(lines[0], "version=1 bytes=" + std::to_string(gray_instances(1).size()))) << lines[0];
  EXPECT_TRUE(has(lines[1], "\"GET /v1/models/gray/versions/7\" 404 ")) << lines[1];
  EXPECT_TRUE(has(lines[2], "\"GET /v2/health/live\" 200 ")) << lines[2];
  EXPECT_EQ(lines[0].size() > 20 ? lines[0][4] : ' ', '-') << lines[0];  // 2026-...
}

// The state of each version listed by a status path: {"1": "END", "2": "AVAILABLE"}.
std::map<std::string, std::string> version_states(int port, const std::string &path) {
  std::map<std::string, std::string> out;
  Response r = http(port, "GET", path);
  Json j(r.body);
  const cnn_json *list = cnn_json_get(j.doc, "model_version_status");
  for (size_t i = 0; i < cnn_json_count(list); i++) {
    const cnn_json *e = cnn_json_at(list, i);
    out[string_of(cnn_json_get(e, "version"))] = string_of(cnn_json_get(e, "state"));
  }
  return out;
}

TEST(Serve, ANewVersionTakesOverUnderLoadAndABrokenOneNeverDoes) {
  REQUIRE_SERVE();
  GrayFixture f;
  Server s(f.base, "gray", {"--poll-seconds", "1"});
  ASSERT_GT(s.port(), 0) << s.log();
  // a client sends requests without a pause until it has seen version 2 answer ten times (at most 30 s)
  std::atomic<bool> saw_two{false};
  std::vector<int> statuses;
  std::vector<std::string> versions, failures;
  std::string infer = "{\"inputs\": [{\"name\": \"input\", \"shape\": [1, 8, 8], \"datatype\": \"UINT8\", \"data\": [";
  for (int i = 0; i < 64; i++) infer += (i ? "," : "") + std::to_string(i * 4);
  infer += "]}]}";
  std::thread client([&] {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    int after = 0;
    while (std::chrono::steady_clock::now() < deadline && after < 10) {
      Response r = http(s.port(), "POST", "/v2/models/gray/infer", infer);
      statuses.push_back(r.status);
      failures.push_back(r.failure);
      Json j(r.body);
      versions.push_back(string_of(cnn_json_get(j.doc, "model_version")));
      if (versions.back() == "2") {
        saw_two = true;
        after++;
      }
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // version 2 appears whole: written beside, then moved in
  make_model(f.tmp.file("staging"), 2, kGray, kClassNames, 2);
  ASSERT_EQ(rename(f.tmp.file("staging/2").c_str(), (f.base + "/2").c_str()), 0);
  client.join();
  ASSERT_TRUE(saw_two) << s.log();
  for (size_t i = 0; i < statuses.size(); i++)
    ASSERT_EQ(statuses[i], 200) << "request " << i << ": " << failures[i] << "\n" << s.log();
  // answers came from 1, then from 2, never back
  size_t first_two = 0;
  while (first_two < versions.size() && versions[first_two] == "1") first_two++;
  EXPECT_GT(first_two, 0u);
  for (size_t i = first_two; i < versions.size(); i++) EXPECT_EQ(versions[i], "2") << i;
  printf("%zu requests during the swap, all answered 200 (%zu by version 1)\n", versions.size(), first_two);
  // version 1 is unloaded (at the next poll, its requests being answered): END when asked for, no longer listed
  std::map<std::string, std::string> states;
  for (int i = 0; i < 100 && states["1"] != "END"; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    states = version_states(s.port(), "/v1/models/gray/versions/1");
  }
  EXPECT_EQ(states["1"], "END") << s.log();
  states = version_states(s.port(), "/v1/models/gray");
  EXPECT_EQ(states.count("1"), 0u);
  EXPECT_EQ(states["2"], "AVAILABLE");
  EXPECT_TRUE(has(s.log(), "version 1 unloaded")) << s.log();
  EXPECT_EQ(http(s.port(), "POST", "/v1/models/gray/versions/1:predict", gray_instances(1)).status, 404);

  // a broken version 3 is reported and version 2 goes on serving
  EXPECT_EQ(system(("mkdir -p '" + f.tmp.file("staging/3") + "'").c_str()), 0);
  cnntest::write_file(f.tmp.file("staging/3/model.safetensors"), "this is not a model");
  ASSERT_EQ(rename(f.tmp.file("staging/3").c_str(), (f.base + "/3").c_str()), 0);
  for (int i = 0; i < 100 && states["3"] != "END"; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    states = version_states(s.port(), "/v1/models/gray");
  }
  EXPECT_EQ(states["3"], "END") << s.log();
  EXPECT_EQ(states["2"], "AVAILABLE");
  Response r = http(s.port(), "GET", "/v1/models/gray/versions/3");
  EXPECT_TRUE(has(r.body, "\"error_code\":\"UNKNOWN\"")) << r.body;
  r = http(s.port(), "POST", "/v2/models/gray/infer", infer);
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(has(r.body, "\"model_version\":\"2\"")) << r.body;
  Response m = http(s.port(), "GET", "/monitoring/prometheus/metrics");
  EXPECT_EQ(metric(m.body, "cnn_serve_model_loads_total{model=\"gray\",result=\"ok\"}"), 2) << m.body;
  EXPECT_EQ(metric(m.body, "cnn_serve_model_loads_total{model=\"gray\",result=\"error\"}"), 1) << m.body;
  EXPECT_EQ(s.stop(), 0) << s.log();
}

TEST(Serve, SighupLooksForNewVersionsAtOnce) {
  REQUIRE_SERVE();
  GrayFixture f;
  Server s(f.base, "gray", {"--poll-seconds", "0"});  // no poller: only SIGHUP looks
  ASSERT_GT(s.port(), 0) << s.log();
  make_model(f.tmp.file("staging"), 5, kGray, kClassNames, 5);
  ASSERT_EQ(rename(f.tmp.file("staging/5").c_str(), (f.base + "/5").c_str()), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(version_states(s.port(), "/v1/models/gray").count("5"), 0u);
  s.signal(SIGHUP);
  std::map<std::string, std::string> states;
  for (int i = 0; i < 100 && states["5"] != "AVAILABLE"; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    states = version_states(s.port(), "/v1/models/gray");
  }
  EXPECT_EQ(states["5"], "AVAILABLE") << s.log();
  EXPECT_TRUE(has(s.log(), "SIGHUP: looking for new versions")) << s.log();
  Response r = http(s.port(), "POST", "/v1/models/gray:predict", gray_instances(1));
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(has(r.body, "predictions")) << r.body;
  EXPECT_EQ(s.stop(), 0) << s.log();
}

TEST(Serve, SlowClientsAreTimedOutWhileOthersAreServed) {
  REQUIRE_SERVE();
  GrayFixture f;
  Server s(f.base, "gray", {"--connection-timeout", "1"});
  ASSERT_GT(s.port(), 0) << s.log();
  // one client sends half a request line and stops; another half a body
  int slow1 = connect_to(s.port()), slow2 = connect_to(s.port());
  ASSERT_GE(slow1, 0);
  ASSERT_GE(slow2, 0);
  EXPECT_TRUE(send_all(slow1, "POST /v1/models/gr"));
  EXPECT_TRUE(send_all(slow2, "POST /v1/models/gray:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"in"));
  EXPECT_EQ(http(s.port(), "POST", "/v1/models/gray:predict", gray_instances(1)).status, 200);
  // the server closes both within a few seconds (each recv waits at most 10 s)
  for (int fd : {slow1, slow2}) {
    auto t0 = std::chrono::steady_clock::now();
    char buf[256];
    ssize_t n = 1;
    for (int i = 0; i < 100 && n > 0; i++) n = recv_some(fd, buf, sizeof buf);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LE(n, 0);
    EXPECT_LT(secs, 8.0);
    close(fd);
  }
  EXPECT_EQ(http(s.port(), "POST", "/v1/models/gray:predict", gray_instances(1)).status, 200);
  EXPECT_EQ(s.stop(), 0) << s.log();
}

TEST(Serve, SigtermAnswersTheRequestsInFlightAndExitsZero) {
  REQUIRE_SERVE();
  GrayFixture f;
  // a batch waits 5 s to fill: the request is still waiting when SIGTERM comes
  Server s(f.base, "gray", {"--batch-timeout-us", "5000000", "--max-batch-size", "8"});
  ASSERT_GT(s.port(), 0) << s.log();
  // the request is sent whole before the signal (the answer is read after the exit)
  int fd = connect_to(s.port());
  ASSERT_GE(fd, 0);
  std::string body = gray_instances(1);
  ASSERT_TRUE(send_all(fd, "POST /v1/models/gray:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(s.stop(), 0) << s.log();
  // the drain runs the waiting batch at once, not when its 5 s are up
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 3.0) << s.log();
  std::string raw = read_to_end(fd, 1000);
  close(fd);
  Response r = parse_response(raw);
  EXPECT_EQ(r.status, 200) << raw << "\n" << s.log();
  EXPECT_TRUE(has(s.log(), "SIGTERM: draining")) << s.log();
  // and no one is listening any more
  EXPECT_EQ(http(s.port(), "GET", "/v2/health/live").status, 0);
}

TEST(Serve, StartupFailuresAreReported) {
  REQUIRE_SERVE();
  TempDir tmp;
  std::string out;
  EXPECT_EQ(cnntest::run_cnn({"serve", "--model-base-path", tmp.file("none"), "--model-name", "m", "--port", "0"}, &out),
            1);
  EXPECT_TRUE(has(out, "none")) << out;
  EXPECT_EQ(system(("mkdir -p '" + tmp.file("empty/7") + "'").c_str()), 0);
  EXPECT_EQ(cnntest::run_cnn({"serve", "--model-base-path", tmp.file("empty"), "--model-name", "m", "--port", "0"}, &out),
            1);
  EXPECT_TRUE(has(out, "holds no version")) << out;
  EXPECT_EQ(system(("mkdir -p '" + tmp.file("broken/4") + "'").c_str()), 0);
  cnntest::write_file(tmp.file("broken/4/model.safetensors"), "garbage");
  EXPECT_EQ(cnntest::run_cnn({"serve", "--model-base-path", tmp.file("broken"), "--model-name", "m", "--port", "0"},
                             &out),
            1);
  EXPECT_TRUE(has(out, "version 4 failed to load")) << out;
  EXPECT_EQ(cnntest::run_cnn({"serve", "--model-name", "m"}, &out), 2);
  EXPECT_TRUE(has(out, "--model-base-path DIR and --model-name NAME are required")) << out;
  EXPECT_EQ(cnntest::run_cnn({"serve", "--help"}, &out), 0);
  EXPECT_TRUE(has(out, "--max-batch-size")) << out;
}

TEST(Serve, ABrokenHigherVersionIsReportedAndTheLastGoodOneServes) {
  REQUIRE_SERVE();
  GrayFixture f;
  EXPECT_EQ(system(("mkdir -p '" + f.base + "/2'").c_str()), 0);
  cnntest::write_file(f.base + "/2/model.safetensors", "not a model");
  Server s(f.base, "gray", {});
  ASSERT_GT(s.port(), 0) << s.log();
  Response r = http(s.port(), "GET", "/v1/models/gray");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j(r.body);
  const cnn_json *list = cnn_json_get(j.doc, "model_version_status");
  ASSERT_EQ(cnn_json_count(list), 2u) << r.body;
  bool saw_broken = false, saw_good = false;
  for (size_t i = 0; i < 2; i++) {
    const cnn_json *e = cnn_json_at(list, i);
    std::string v = string_of(cnn_json_get(e, "version")), state = string_of(cnn_json_get(e, "state"));
    std::string msg = string_of(cnn_json_get(cnn_json_get(e, "status"), "error_message"));
    if (v == "2") saw_broken = state == "END" && !msg.empty();
    if (v == "1") saw_good = state == "AVAILABLE";
  }
  EXPECT_TRUE(saw_broken && saw_good) << r.body;
  EXPECT_EQ(http(s.port(), "POST", "/v1/models/gray:predict", gray_instances(1)).status, 200);
  r = http(s.port(), "POST", "/v1/models/gray/versions/2:predict", gray_instances(1));
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_TRUE(has(r.body, "not available")) << r.body;
  EXPECT_EQ(s.stop(), 0) << s.log();
}

// ---- several models: the config file, version policies, labels -----------------------------------------------------

TEST(ServeConfig, PoliciesLabelsAndRelativePathsParse) {
  const char text[] = R"({"model_config_list": [
      {"name": "a", "base_path": "models/a", "model_version_policy": {"latest": {"num_versions": 2}},
       "version_labels": {"stable": 1, "canary": 2}},
      {"name": "b.v-2_x", "base_path": "/srv/b", "model_platform": "cnn",
       "model_version_policy": {"specific": {"versions": [3, 5]}}},
      {"name": "c", "base_path": "c", "model_version_policy": {"all": {}}},
      {"name": "d", "base_path": "d"}]})";
  cnn_serve_model_config c;
  ASSERT_EQ(cnn_serve_parse_model_config(text, sizeof text - 1, "/etc/cnn", &c), CNN_OK) << cnn_last_error();
  ASSERT_EQ(c.n, 4);
  EXPECT_STREQ(c.models[0].name, "a");
  EXPECT_STREQ(c.models[0].base_path, "/etc/cnn/models/a");
  EXPECT_EQ(c.models[0].policy, CNN_SERVE_POLICY_LATEST);
  EXPECT_EQ(c.models[0].latest, 2);
  ASSERT_EQ(c.models[0].nlabels, 2);
  EXPECT_STREQ(c.models[0].labels[1].name, "canary");
  EXPECT_EQ(c.models[0].labels[1].version, 2);
  EXPECT_STREQ(c.models[1].base_path, "/srv/b");
  EXPECT_EQ(c.models[1].policy, CNN_SERVE_POLICY_SPECIFIC);
  ASSERT_EQ(c.models[1].nversions, 2);
  EXPECT_EQ(c.models[1].versions[1], 5);
  EXPECT_EQ(c.models[2].policy, CNN_SERVE_POLICY_ALL);
  EXPECT_EQ(c.models[3].policy, CNN_SERVE_POLICY_LATEST);  // TF Serving's default: the latest one
  EXPECT_EQ(c.models[3].latest, 1);
  cnn_serve_model_config_free(&c);
}

TEST(ServeConfig, MistakesAreNamed) {
  struct Case {
    const char *text, *message;
  } cases[] = {
      {"[1]", "must be a JSON object"},
      {"{\"models\": []}", "unknown key 'models'"},
      {"{\"model_config_list\": []}", "1 to 256 models"},
      {"{\"model_config_list\": [{\"base_path\": \"x\"}]}", "\"name\" must be"},
      {"{\"model_config_list\": [{\"name\": \"a/b\", \"base_path\": \"x\"}]}", "\"name\" must be"},
      {"{\"model_config_list\": [{\"name\": \"a\"}]}", "model 'a': \"base_path\" must be"},
      {"{\"model_config_list\": [{\"name\": \"a\", \"base_path\": \"x\", \"basepath\": 1}]}", "unknown key 'basepath'"},
      {"{\"model_config_list\": [{\"name\": \"a\", \"base_path\": \"x\"}, {\"name\": \"a\", \"base_path\": \"y\"}]}",
       "model 'a' is configured twice"},
      {"{\"model_config_list\": [{\"name\": \"a\", \"base_path\": \"x\", \"model_platform\": \"tensorflow\"}]}",
       "model_platform must be \"cnn\""},
      {"{\"model_config_list\": [{\"name\": \"a\", \"base_path\": \"x\", \"model_version_policy\": {\"newest\": {}}}]}",
       "unknown key 'newest'"},
      {"{\"model_config_list\": [{\"name\": \"a\", \"base_path\": \"x\", \"model_version_policy\": {\"latest\": "
       "{\"num_versions\": 0}}}]}",
       "num_versions must be an integer from 1"},
      {"{\"model_config_list\": [{\"name\": \"a\", \"base_path\": \"x\", \"model_version_policy\": {\"specific\": "
       "{\"versions\": []}}}]}",
       "versions must be an array of 1"},
      {"{\"model_config_list\": [{\"name\": \"a\", \"base_path\": \"x\", \"model_version_policy\": {\"specific\": "
       "{\"versions\": [1, -2]}}}]}",
       "versions[1]: a version must be an integer"},
      {"{\"model_config_list\": [{\"name\": \"a\", \"base_path\": \"x\", \"model_version_policy\": {\"specific\": "
       "{\"versions\": [4, 4]}}}]}",
       "version 4 is listed twice"},
      {"{\"model_config_list\": [{\"name\": \"a\", \"base_path\": \"x\", \"model_version_policy\": {\"all\": 1}}]}",
       "all must be an empty object"},
      {"{\"model_config_list\": [{\"name\": \"a\", \"base_path\": \"x\", \"version_labels\": {\"1x\": 1}}]}",
       "starts with a digit"},
      {"{\"model_config_list\": [{\"name\": \"a\", \"base_path\": \"x\", \"version_labels\": {\"s t\": 1}}]}",
       "version label 's t'"},
      {"{\"model_config_list\": [{\"name\": \"a\", \"base_path\": \"x\", \"version_labels\": {\"s\": 1, \"s\": 2}}]}",
       "the key \"s\" twice"},
      {"{\"model_config_list\": [{\"name\": \"a\", \"base_path\": \"x\", \"version_labels\": {\"s\": \"1\"}}]}",
       "version_labels.s: a version must be an integer"},
      {"{\"model_config_list\": [{\"name\": \"a\", \"base_path\": \"x\", \"name\": \"b\"}]}", "the key \"name\" twice"},
      {"{\"model_config_list\": [", "invalid JSON"},
  };
  for (const Case &c : cases) {
    cnn_serve_model_config out;
    EXPECT_NE(cnn_serve_parse_model_config(c.text, strlen(c.text), nullptr, &out), CNN_OK) << c.text;
    EXPECT_TRUE(has(cnn_last_error(), c.message)) << c.text << "\n" << cnn_last_error();
    EXPECT_EQ(out.n, 0);
    EXPECT_EQ(out.models, nullptr);
  }
}

TEST(ServeRoute, LabelsTakeTheVersionsPlace) {
  cnn_serve_route r;
  cnn_serve_parse_path("/v1/models/m/labels/stable:predict", &r);
  EXPECT_EQ(r.kind, CNN_ROUTE_V1_PREDICT);
  EXPECT_EQ(std::string(r.name, r.name_len), "m");
  EXPECT_EQ(std::string(r.label, r.label_len), "stable");
  EXPECT_EQ(r.version, -1);
  cnn_serve_parse_path("/v1/models/m/labels/canary/metadata", &r);
  EXPECT_EQ(r.kind, CNN_ROUTE_V1_METADATA);
  EXPECT_EQ(std::string(r.label, r.label_len), "canary");
  cnn_serve_parse_path("/v1/models/m/labels/canary", &r);
  EXPECT_EQ(r.kind, CNN_ROUTE_V1_STATUS);
  cnn_serve_parse_path("/v2/models/m/labels/canary/infer", &r);
  EXPECT_EQ(r.kind, CNN_ROUTE_V2_INFER);
  EXPECT_EQ(std::string(r.label, r.label_len), "canary");
  cnn_serve_parse_path("/v2/models/m/labels/x/ready", &r);
  EXPECT_EQ(r.kind, CNN_ROUTE_V2_MODEL_READY);
  cnn_serve_parse_path("/v1/models/m/labels/:predict", &r);
  EXPECT_NE(r.bad, nullptr);
  cnn_serve_parse_path("/v1/models/m/versions/3", &r);
  EXPECT_EQ(r.label, nullptr);
  EXPECT_EQ(r.version, 3);
}

// Versions 1 and 2 of "gray" (latest 2, labels), versions 1..3 of "rgb" (only 1 and 3 served), and the config.
struct TwoModels {
  TempDir tmp;
  std::string gray = tmp.file("gray"), rgb = tmp.file("rgb"), config = tmp.file("models.json");
  TwoModels() {
    make_model(gray, 1, kGray, kClassNames, 1);
    make_model(gray, 2, kGray, kClassNames, 2);
    for (int v = 1; v <= 3; v++) make_model(rgb, v, kRgb, kResizeAndNormalization, (uint64_t)v);
    write(R"({"model_config_list": [
      {"name": "gray", "base_path": "gray", "model_version_policy": {"latest": {"num_versions": 2}},
       "version_labels": {"stable": 1, "canary": 2}},
      {"name": "rgb", "base_path": ")" + rgb + R"(", "model_version_policy": {"specific": {"versions": [1, 3]}}}]})");
  }
  void write(const std::string &text) {  // whole, by a rename: the server never reads half a config
    cnntest::write_file(config + ".tmp", text);
    ASSERT_EQ(rename((config + ".tmp").c_str(), config.c_str()), 0);
  }
};

std::string model_version_of(const Response &r) {
  Json j(r.body);
  return string_of(cnn_json_get(j.doc, "model_version"));
}

TEST(Serve, AConfigServesSeveralModelsWithTheirPoliciesAndLabels) {
  REQUIRE_SERVE();
  TwoModels f;
  Server s(f.config, "", {"--poll-seconds", "0"});
  ASSERT_GT(s.port(), 0) << s.log();
  // latest 2: both gray versions; specific [1, 3]: rgb 1 and 3, not 2
  std::map<std::string, std::string> gray = version_states(s.port(), "/v1/models/gray");
  EXPECT_EQ(gray.size(), 2u);
  EXPECT_EQ(gray["1"], "AVAILABLE");
  EXPECT_EQ(gray["2"], "AVAILABLE");
  std::map<std::string, std::string> rgb = version_states(s.port(), "/v1/models/rgb");
  EXPECT_EQ(rgb.size(), 2u);
  EXPECT_EQ(rgb["1"], "AVAILABLE");
  EXPECT_EQ(rgb["3"], "AVAILABLE");
  EXPECT_EQ(http(s.port(), "GET", "/v1/models/rgb/versions/2").status, 404);
  // without a version: the highest; a label: its version, in both APIs
  std::string infer = "{\"inputs\": [{\"name\": \"input\", \"shape\": [1, 8, 8], \"datatype\": \"FP32\", \"data\": [";
  for (int i = 0; i < 64; i++) infer += (i ? "," : "") + std::to_string(i / 64.0);
  infer += "]}]}";
  EXPECT_EQ(model_version_of(http(s.port(), "POST", "/v2/models/gray/infer", infer)), "2");
  EXPECT_EQ(model_version_of(http(s.port(), "POST", "/v2/models/gray/labels/stable/infer", infer)), "1");
  EXPECT_EQ(model_version_of(http(s.port(), "POST", "/v2/models/gray/labels/canary/infer", infer)), "2");
  Response r = http(s.port(), "POST", "/v1/models/gray/labels/stable:predict", gray_instances(2));
  EXPECT_EQ(r.status, 200) << r.body;
  std::vector<float> v1 = predict_local(f.gray + "/1/model.safetensors", gray_images(2), 2);
  Json j(r.body);
  const cnn_json *preds = cnn_json_get(j.doc, "predictions");
  ASSERT_EQ(cnn_json_count(preds), 2u) << r.body;
  double p = 0;
  ASSERT_TRUE(cnn_json_double(cnn_json_at(cnn_json_at(preds, 1), 2), &p));
  EXPECT_NEAR(p, v1[5], 1e-6);  // version 1's answer, not version 2's
  r = http(s.port(), "GET", "/v1/models/gray/labels/canary");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(version_states(s.port(), "/v1/models/gray/labels/canary").count("2"), 1u) << r.body;
  EXPECT_EQ(http(s.port(), "GET", "/v1/models/gray/labels/stable/metadata").status, 200);
  EXPECT_EQ(http(s.port(), "GET", "/v2/models/gray/labels/canary/ready").status, 200);
  r = http(s.port(), "GET", "/v1/models/gray/labels/beta");
  EXPECT_EQ(r.status, 404);
  EXPECT_TRUE(has(r.body, "model gray has no version label 'beta'")) << r.body;
  r = http(s.port(), "POST", "/v1/models/rgb/labels/stable:predict", "{\"instances\": []}");
  EXPECT_EQ(r.status, 404);
  EXPECT_TRUE(has(r.body, "it has no labels")) << r.body;
  // the other model answers in its own shape
  r = http(s.port(), "POST", "/v1/models/rgb:predict",
           "{\"instances\": [" + constant_image_json(6, 6, 3, 0.5) + "]}");
  EXPECT_EQ(r.status, 200) << r.body;
  r = http(s.port(), "GET", "/v1/models/blue");
  EXPECT_EQ(r.status, 404);
  EXPECT_TRUE(has(r.body, "this server serves 'gray', 'rgb'")) << r.body;
  EXPECT_EQ(http(s.port(), "GET", "/v2/health/ready").status, 200);
  // the metrics name each model
  std::string m = http(s.port(), "GET", "/monitoring/prometheus/metrics").body;
  EXPECT_EQ(metric(m, "cnn_serve_model_loads_total{model=\"gray\",result=\"ok\"}"), 2) << m;
  EXPECT_EQ(metric(m, "cnn_serve_model_loads_total{model=\"rgb\",result=\"ok\"}"), 2) << m;
  EXPECT_EQ(metric(m, "cnn_serve_requests_total{model=\"gray\",version=\"1\",api=\"infer\",code=\"200\"}"), 1) << m;
  EXPECT_EQ(metric(m, "cnn_serve_requests_total{model=\"gray\",version=\"2\",api=\"infer\",code=\"200\"}"), 2) << m;
  EXPECT_EQ(metric(m, "cnn_serve_requests_total{model=\"rgb\",version=\"3\",api=\"predict\",code=\"200\"}"), 1) << m;
  EXPECT_EQ(s.stop(), 0) << s.log();

  // flags that do not go together, and a config that does not parse, stop the start with a message
  std::string out;
  EXPECT_EQ(cnntest::run_cnn({"serve", "--model-config", f.config, "--model-name", "x"}, &out), 2);
  EXPECT_TRUE(has(out, "give it alone")) << out;
  cnntest::write_file(f.tmp.file("bad.json"), "{\"model_config_list\": [{\"name\": \"g\"}]}");
  EXPECT_EQ(cnntest::run_cnn({"serve", "--model-config", f.tmp.file("bad.json"), "--port", "0"}, &out), 1);
  EXPECT_TRUE(has(out, "bad.json: model 'g': \"base_path\" must be")) << out;
  cnntest::write_file(f.tmp.file("none.json"),
                      "{\"model_config_list\": [{\"name\": \"g\", \"base_path\": \"gray\", \"model_version_policy\": "
                      "{\"specific\": {\"versions\": [7]}}}]}");
  EXPECT_EQ(cnntest::run_cnn({"serve", "--model-config", f.tmp.file("none.json"), "--port", "0"}, &out), 1);
  EXPECT_TRUE(has(out, "holds no version that the version policy names")) << out;
}

TEST(Serve, SighupReadsTheConfigAgain) {
  REQUIRE_SERVE();
  TwoModels f;
  Server s(f.config, "", {"--poll-seconds", "0"});
  ASSERT_GT(s.port(), 0) << s.log();
  std::string infer = "{\"inputs\": [{\"name\": \"input\", \"shape\": [1, 8, 8], \"datatype\": \"UINT8\", \"data\": [";
  for (int i = 0; i < 64; i++) infer += (i ? "," : "") + std::to_string(i);
  infer += "]}]}";
  EXPECT_EQ(model_version_of(http(s.port(), "POST", "/v2/models/gray/labels/stable/infer", infer)), "1");
  // stable moves to 2, a third version comes (latest 2: 2 and 3 stay), rgb goes, "copy" comes
  make_model(f.tmp.file("staging"), 3, kGray, kClassNames, 3);
  ASSERT_EQ(rename(f.tmp.file("staging/3").c_str(), (f.gray + "/3").c_str()), 0);
  f.write(R"({"model_config_list": [
      {"name": "gray", "base_path": "gray", "model_version_policy": {"latest": {"num_versions": 2}},
       "version_labels": {"stable": 2, "canary": 3}},
      {"name": "copy", "base_path": "gray"}]})");
  s.signal(SIGHUP);
  std::map<std::string, std::string> states;
  for (int i = 0; i < 100 && !(states["1"] == "END" && http(s.port(), "GET", "/v1/models/rgb").status == 404); i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    states = version_states(s.port(), "/v1/models/gray/versions/1");
  }
  EXPECT_EQ(states["1"], "END") << s.log();
  states = version_states(s.port(), "/v1/models/gray");
  EXPECT_EQ(states["2"], "AVAILABLE") << s.log();
  EXPECT_EQ(states["3"], "AVAILABLE") << s.log();
  EXPECT_EQ(model_version_of(http(s.port(), "POST", "/v2/models/gray/labels/stable/infer", infer)), "2");
  EXPECT_EQ(model_version_of(http(s.port(), "POST", "/v2/models/gray/labels/canary/infer", infer)), "3");
  Response r = http(s.port(), "GET", "/v1/models/rgb");
  EXPECT_EQ(r.status, 404);
  EXPECT_TRUE(has(r.body, "this server serves 'gray', 'copy'")) << r.body;
  EXPECT_EQ(model_version_of(http(s.port(), "POST", "/v2/models/copy/infer", infer)), "3");
  EXPECT_TRUE(has(s.log(), "model rgb: no longer in the config")) << s.log();
  EXPECT_TRUE(has(s.log(), "model rgb version 3 unloaded")) << s.log();
  // a config that does not parse changes nothing
  f.write("{\"model_config_list\": [{\"name\": \"gray\"}]}");
  s.signal(SIGHUP);
  for (int i = 0; i < 100 && !has(s.log(), "the config was not reloaded"); i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(has(s.log(), "the config was not reloaded: --model-config")) << s.log();
  EXPECT_EQ(model_version_of(http(s.port(), "POST", "/v2/models/copy/infer", infer)), "3");
  EXPECT_EQ(model_version_of(http(s.port(), "POST", "/v2/models/gray/labels/stable/infer", infer)), "2");
  EXPECT_EQ(s.stop(), 0) << s.log();
}

// ---- drift monitoring -----------------------------------------------------------------------------------------------

TEST(Serve, DriftScoresFollowWhatIsServedAndWarnOnce) {
  REQUIRE_SERVE();
  TempDir tmp;
  std::string base = tmp.file("models");
  make_model(base, 1, kGray, kProfile);  // trained on gray around 0.3 (std 0.2), classes equally often
  Server s(base, "gray", {"--drift-min-images", "20", "--drift-threshold", "0.5"});
  ASSERT_GT(s.port(), 0) << s.log();
  std::string m = http(s.port(), "GET", "/monitoring/prometheus/metrics").body;
  EXPECT_EQ(metric(m, "cnn_serve_drift_images{model=\"gray\",version=\"1\"}"), 0) << m;
  // 19 images like the training set's mean: nothing to say yet
  std::string like = "{\"instances\": [";
  for (int i = 0; i < 19; i++) like += (i ? "," : "") + constant_image_json(8, 8, 1, 0.3);
  like += "]}";
  EXPECT_EQ(http(s.port(), "POST", "/v1/models/gray:predict", like).status, 200);
  m = http(s.port(), "GET", "/monitoring/prometheus/metrics").body;
  EXPECT_EQ(metric(m, "cnn_serve_drift_images{model=\"gray\",version=\"1\"}"), 19) << m;
  EXPECT_NEAR(metric(m, "cnn_serve_input_mean{model=\"gray\",version=\"1\",channel=\"0\"}"), 0.3, 1e-6) << m;
  EXPECT_NEAR(metric(m, "cnn_serve_input_std{model=\"gray\",version=\"1\",channel=\"0\"}"), 0.0, 1e-6) << m;
  EXPECT_NEAR(metric(m, "cnn_serve_drift_channel_z{model=\"gray\",version=\"1\",channel=\"0\"}"), 0.0, 1e-5) << m;
  // one image always gets one class here: 19 of 19 in one class
  double shares = 0, top = 0;
  for (const char *c : {"cat", "dog", "bird"}) {
    double share = metric(m, std::string("cnn_serve_predicted_class_share{model=\"gray\",version=\"1\",class=\"") + c +
                                 "\"}");
    shares += share;
    top = std::max(top, share);
  }
  EXPECT_NEAR(shares, 1.0, 1e-9) << m;
  EXPECT_EQ(top, 1.0) << m;
  // the PSI of (1, 0, 0) against (1/3, 1/3, 1/3), zero shares counted as 1e-4
  double psi = (1 - 1.0 / 3) * std::log(3.0) + 2 * (1e-4 - 1.0 / 3) * std::log(1e-4 * 3);
  EXPECT_NEAR(metric(m, "cnn_serve_drift_psi{model=\"gray\",version=\"1\"}"), psi, 1e-6) << m;
  EXPECT_FALSE(has(s.log(), "drift")) << s.log();
  // bright images: the mean moves 3.5 training std away, and the 20th image lets the warnings out, once each
  std::string bright = "{\"instances\": [" + constant_image_json(8, 8, 1, 1.0) + "," +
                       constant_image_json(8, 8, 1, 1.0) + "]}";
  for (int i = 0; i < 20; i++) EXPECT_EQ(http(s.port(), "POST", "/v1/models/gray:predict", bright).status, 200);
  m = http(s.port(), "GET", "/monitoring/prometheus/metrics").body;
  double mean = (19 * 0.3 + 40 * 1.0) / 59;
  EXPECT_NEAR(metric(m, "cnn_serve_input_mean{model=\"gray\",version=\"1\",channel=\"0\"}"), mean, 1e-6) << m;
  EXPECT_NEAR(metric(m, "cnn_serve_drift_channel_z{model=\"gray\",version=\"1\",channel=\"0\"}"), (mean - 0.3) / 0.2,
              1e-5) << m;
  std::string log = s.log();
  EXPECT_TRUE(has(log, "warning: model gray version 1: drift: the predicted classes' PSI is")) << log;
  EXPECT_TRUE(has(log, "warning: model gray version 1: drift: input channel 0's mean is")) << log;
  size_t first = log.find("channel 0's mean");
  EXPECT_EQ(log.find("channel 0's mean", first + 1), std::string::npos) << "warned twice:\n" << log;
  EXPECT_EQ(s.stop(), 0) << s.log();

  // a model file without a profile: served statistics, no scores
  std::string plain = tmp.file("plain");
  make_model(plain, 1, kGray, kClassNames);
  Server p(plain, "plain", {});
  ASSERT_GT(p.port(), 0) << p.log();
  EXPECT_EQ(http(p.port(), "POST", "/v1/models/plain:predict", bright).status, 200);
  m = http(p.port(), "GET", "/monitoring/prometheus/metrics").body;
  EXPECT_NEAR(metric(m, "cnn_serve_input_mean{model=\"plain\",version=\"1\",channel=\"0\"}"), 1.0, 1e-6) << m;
  EXPECT_FALSE(has(m, "cnn_serve_drift_psi{")) << m;
  EXPECT_EQ(p.stop(), 0) << p.log();
}

}  // namespace
