// Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/TARGET/seed-*), a few small
// valid and nearly valid inputs per target, in the input layout each target's header describes:
//
//   build/tests/fuzz/fuzz_make_corpus tests/fuzz/corpus
//
// Binary seeds (tensor payloads, SecAgg messages, CSRs and certificates, signed tasks) come from
// the project's own encoders; certificates from the fixed fuzz CA (fuzz_pki.h), so they chain in
// every fuzz process. Text seeds are the shipped example configs and short hand-written inputs.
// Re-running it rewrites the seed-* files (random keys and signatures differ run to run); files
// of past findings (named after the finding, not seed-*) are left alone.
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/model_layout.h"
#include "common/tensor_codec.h"
#include "coordinator/task_envelope.h"
#include "crypto/pki.h"
#include "tests/fuzz/fuzz_pki.h"
#include "tests/fuzz/secagg_round.h"

namespace {

using namespace fleet;

std::string g_out;

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  const std::string dir = g_out + "/" + target;
  ::mkdir(g_out.c_str(), 0755);
  ::mkdir(dir.c_str(), 0755);
  std::ofstream f(dir + "/seed-" + name, std::ios::binary | std::ios::trunc);
  f << bytes;
  FUZZ_CHECK(f.good(), "cannot write %s/seed-%s", dir.c_str(), name.c_str());
}

std::string Byte(int b) { return std::string(1, static_cast<char>(b)); }

std::string ReadSource(const std::string& rel) {
  std::ifstream in(std::string(FLEET_SOURCE_DIR) + "/" + rel, std::ios::binary);
  FUZZ_CHECK(in.good(), "cannot read %s", rel.c_str());
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

v1::ModelSpec Mlp(uint32_t in, std::vector<uint32_t> hidden, uint32_t out) {
  v1::ModelSpec m;
  m.set_type("mlp");
  m.set_input_dim(in);
  for (uint32_t h : hidden) m.add_hidden(h);
  m.set_output_dim(out);
  return m;
}

void TensorCodec() {
  // The fixed layouts of tensor_codec_fuzz.cc, in its order.
  std::vector<v1::ModelSpec> specs{Mlp(3, {4}, 2), Mlp(2, {}, 2), Mlp(1, {2, 2}, 1)};
  v1::ModelSpec cnn = Mlp(8, {2}, 2);
  cnn.set_type("cnn1d");
  cnn.set_channels(2);
  cnn.set_kernel_size(3);
  specs.push_back(cnn);
  for (size_t i = 0; i < specs.size(); ++i) {
    ModelLayout l = LayoutFor(specs[i]).value();
    std::vector<float> p = InitialParameters(l, i);
    Write("tensor_codec", "layout" + std::to_string(i), Byte(i) + EncodeParameters(l, p.data()));
  }
  // A derived layout: 0xf0, type mlp, input 2, output 2, channels 0, kernel 0, one hidden of 3.
  std::string spec = Byte(0xf0) + Byte(0);
  for (uint32_t v : {2u, 2u, 0u, 0u}) spec += std::string(reinterpret_cast<char*>(&v), 4);
  spec += Byte(1);
  uint32_t h = 3;
  spec += std::string(reinterpret_cast<char*>(&h), 4);
  ModelLayout l = LayoutFor(Mlp(2, {3}, 2)).value();
  std::vector<float> p = InitialParameters(l, 9);
  Write("tensor_codec", "derived", spec + EncodeParameters(l, p.data()));
  Write("tensor_codec", "empty", Byte(0));
}

void SecAgg() {
  std::map<std::string, std::string> captured;
  fuzz::Plan honest;
  honest.tamper.party = -1;
  honest.capture = &captured;
  fuzz::Outcome out = fuzz::RunRound(honest);
  FUZZ_CHECK(out.end == fuzz::Stage::kDone, "the honest round did not complete");
  for (const auto& [key, bytes] : captured) {
    // key: side/stage/party
    const bool to_client = key.rfind("client/", 0) == 0;
    const int stage = key[to_client ? 7 : 7] - '0';
    const int party = key.back() - '0';
    if (party != 1) continue;  // one party's messages are enough
    const std::string target = to_client ? "secagg_client" : "secagg_server";
    const std::string name = "stage" + std::to_string(stage);
    // Replace with the honest message (a replay), append it (repeated fields doubled), and XOR
    // with nothing (the honest message itself).
    Write(target, name + "-replace", Byte(stage) + Byte(party) + Byte(0) + Byte(0) + bytes);
    Write(target, name + "-append", Byte(stage) + Byte(party) + Byte(1) + Byte(1) + bytes);
    Write(target, name + "-xor", Byte(stage) + Byte(party) + Byte(2) + Byte(0x13));
  }
}

void Pki() {
  const std::string key = crypto::GenerateP256Key().value();
  const std::string secagg = crypto::ToString(fuzz::FuzzSigningKey(1).public_key());
  const std::string csr = crypto::MakeCsr(key, "dev-1", secagg).value();
  Write("csr", "pem", Byte(1) + csr);
  Write("csr", "no-secagg-key", Byte(1) + crypto::MakeCsr(key, "dev-2").value());
  Write("csr", "bad-id", Byte(1) + crypto::MakeCsr(key, "dev 3/../x", secagg).value());
  // DER: the PEM body decoded (the target wraps it again).
  auto der_of = [](const std::string& pem) {
    std::string body;
    std::istringstream lines(pem);
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("-----", 0) != 0) body += line;
    }
    std::string der(body.size(), '\0');
    size_t len = 0;
    FUZZ_CHECK(
        sodium_base642bin(reinterpret_cast<unsigned char*>(der.data()), der.size(), body.data(),
                          body.size(), nullptr, &len, nullptr, sodium_base64_VARIANT_ORIGINAL) == 0,
        "base64");
    der.resize(len);
    return der;
  };
  Write("csr", "der", Byte(0) + der_of(csr));

  const std::string device = fuzz::FuzzDeviceCert("dev-1", secagg);
  Write("certificate", "device-der", Byte(0) + crypto::CertificateDer(device).value());
  Write("certificate", "device-pem", Byte(1) + device);
  Write("certificate", "no-secagg-key",
        Byte(0) + crypto::CertificateDer(fuzz::FuzzDeviceCert("dev-2", "")).value());
  Write("certificate", "ca", Byte(0) + crypto::CertificateDer(fuzz::FuzzCaCert()).value());
  crypto::CertRequest server;
  server.public_key_pem = crypto::PublicKeyOf(key).value();
  server.common_name = "localhost";
  server.dns_names = {"localhost"};
  server.ip_addresses = {"127.0.0.1"};
  server.not_before = fuzz::kFuzzNow - 300;
  server.not_after = fuzz::kFuzzNow + 3600;
  Write(
      "certificate", "server",
      Byte(0) + crypto::CertificateDer(
                    crypto::IssueCertificate(fuzz::FuzzCaCert(), fuzz::FuzzCaKey(), server).value())
                    .value());
}

void JobSpecs() {
  Write("job_spec", "har", Byte(0) + ReadSource("configs/jobs/har-mlp.yaml"));
  Write("job_spec", "occupancy", Byte(0) + ReadSource("configs/jobs/occupancy-mlp.yaml"));
  Write("job_spec", "secure-cnn",
        Byte(0) +
            "name: cnn\ndataset: d\nmodel: {type: cnn1d, input_dim: 12, channels: 3, hidden: [4],"
            " kernel_size: 3, output_dim: 2}\nrounds: 3\nmin_clients: 5\ntarget_clients: 8\n"
            "strategy: {name: fedadam, server_learning_rate: 0.1}\n"
            "secure_aggregation: {corrupt_fraction: 0.1, dropout_fraction: 0.2, value_bits: 12}\n"
            "selection: {fraction: 0.5, max_clients: 20, labels: {site: ward3}}\n");
  v1::JobSpec wire;
  wire.set_name("wire");
  wire.set_dataset("d");
  *wire.mutable_model() = Mlp(4, {3}, 2);
  wire.mutable_model()->set_task("classification");
  wire.mutable_model()->set_activation("relu");
  wire.mutable_train()->set_local_epochs(1);
  wire.mutable_train()->set_batch_size(8);
  wire.mutable_train()->set_learning_rate(0.1f);
  wire.mutable_train()->set_optimizer("sgd");
  wire.set_rounds(2);
  wire.set_min_clients(3);
  wire.set_target_clients(4);
  wire.set_round_deadline_s(10);
  wire.set_eval_deadline_s(10);
  wire.mutable_secure_aggregation()->set_disabled(true);
  Write("job_spec", "wire", Byte(1) + wire.SerializeAsString());
}

void Configs() {
  for (const char* c : {"har-fall-alert", "har-subject", "occupancy-control", "occupancy"}) {
    Write("config", std::string("client-") + c,
          Byte(0) + ReadSource(std::string("configs/clients/") + c + ".yaml"));
  }
  Write("config", "coordinator", Byte(1) + ReadSource("configs/coordinator.yaml"));
  Write("config", "generic",
        Byte(2) +
            "a: x\nbb: true\nccc: 7\ndddd: 8\neeeee: -9\nffffff: 1.5\nggggggg: 2.5\n"
            "hhhhhhhh: [1, 2]\niiiiiiiii: [1.5]\njjjjjjjjjj: [a, b]\nkkkkkkkkkkk: {k: v}\n"
            "llllllllllll: 15m\nmmmmmmmmmmmmm: {a: x, bb: true}\n"
            "nnnnnnnnnnnnnn: [{a: x}, {ccc: 1}]\n");
}

void Csv() {
  // Header bytes: see csv_fuzz.cc (a: format/header/features/label/subject, b: feature index,
  // skip, subject filter, offset, normalize; c: label/subject index; d: filter and stds).
  Write("csv", "header-names",
        Byte(0x22 | 0x08) + Byte(0) + Byte(0) + Byte(0) +
            "x,y,label\n1.5,2,0\n-3,4e2,1\n\"5\",6,0\n");
  Write("csv", "rest-subject",
        Byte(0x10 | 0x40) + Byte(0x40) + Byte(3 | (1 << 3)) + Byte(2) +
            "0.1,1,3\n0.2,3,4\n0.3,1,5\n");
  Write("csv", "whitespace",
        Byte(1 | 0x04) + Byte(0x10) + Byte(0) + Byte(1) + "1 2 3\n  4\t5 6\r\n7 8 9\n");
  Write("csv", "r-rownames",
        Byte(0x02 | 0x08 | 0x20 | 0xc0) + Byte(0x80) + Byte(0) + Byte(0) +
            "x,y,label,subject\n\"1\",1,2,0,1\n\"2\",3,4,1,3\n\"3\",5,x,0,3\n");
}

void SensorReadings() {
  // a: 2 fields, timestamp, label; b: both required, t ranged; c: window 2; d: mean and energy.
  Write("sensor_reading", "two-fields",
        Byte(1 | 8 | 16) + Byte(2) + Byte(1) + Byte(4 | 32) +
            "{\"t\": 21.5, \"h\": 40, \"ts\": 1800000000000, \"label\": 1}\x1e"
            "{\"t\": 22, \"h\": null, \"ts\": 1800000000100}\x1e{\"t\": 99, \"h\": 1}");
  Write("sensor_reading", "array",
        Byte(2 | 4 | 32) + Byte(0) + Byte(0x40) + Byte(0xfe) +
            "{\"t\": 1, \"h\": 2, \"acc\": [0.1, -0.2, 9.8], \"extra\": \"x\"}\x1e"
            "{\"t\": 1, \"h\": 2, \"acc\": [0.1, 9.8]}\x1e[1, 2]\x1enot json");
}

void Rules() {
  Write(
      "rules", "occupancy",
      std::string("default_action: {topic: room/hvac, command: {setpoint: comfort, celsius: 21}}\n"
                  "rules:\n"
                  "  - name: occupied\n    when: ok > 0.8\n    for_windows: 2\n"
                  "    release_when: ok < 0.3\n"
                  "    publish: {topic: room/hvac, command: {setpoint: comfort, c: [1, x]}}\n"
                  "  - name: vacant\n    when: ok < 0.2 and raw.t >= 0.5\n    for: 15m\n"
                  "    min_interval: 10m\n"
                  "    publish: {topic: room/hvac, command: {setpoint: eco, on: true}}\n"
                  "    on_release: {topic: room/log, command: {event: vacant-end}}\n") +
          '\0' + std::string("\x00\x10\x00\x00\x00\xf0\x10\x80\x20", 9) +
          std::string("\x00\x10\x00\x00\x00\x10\xf0\x80\x20", 9) +
          std::string("\x01\x10\x00\x00\x00\x10\xf0\x80\x20", 9) +
          std::string("\x00\xf0\xff\xff\xff\x10\x10\x10\x10", 9));
  Write("rules", "fall",
        std::string("rules:\n  - name: fall\n    when: fall > 0.9 and class == 0\n"
                    "    publish: {topic: care/alert, command: {alert: possible_fall}}\n") +
            '\0' + std::string("\x00\x01\x00\x00\x00\xff\x00\x00\x00", 9));
}

void SignedTasks() {
  crypto::Secret32 seed;  // signed_task_fuzz.cc's model-signing key
  for (size_t i = 0; i < seed.size(); ++i) seed.data()[i] = static_cast<uint8_t>(3 * i + 1);
  const crypto::SigningKey key = crypto::SigningKey::FromSeed(seed);
  v1::Task task;
  task.set_kind(v1::Task::TRAIN);
  task.set_job_id("job-1");
  task.set_round(6);
  task.set_resume_epoch(1);
  task.set_dataset("d");
  *task.mutable_model() = Mlp(3, {4}, 2);
  ModelLayout l = LayoutFor(task.model()).value();
  std::vector<float> p = InitialParameters(l, 1);
  task.set_parameters(EncodeParameters(l, p.data()));
  task.mutable_train()->set_local_epochs(1);
  Write("signed_task", "sealed-train", Byte(1) + task.SerializeAsString());
  Write("signed_task", "envelope", Byte(0) + SealTask(task, &key));
  task.set_round(4);  // a rollback for job-1
  Write("signed_task", "rollback", Byte(1) + task.SerializeAsString());
  task.set_round(9);
  task.set_job_id("job-2");
  auto* sa = task.mutable_secagg();
  sa->set_modulus_bits(32);
  sa->set_value_bits(16);
  sa->set_clip(1);
  sa->set_max_weight(1000);
  sa->set_min_survivors(3);
  sa->set_attempt_nonce(std::string(32, 'n'));
  Write("signed_task", "sealed-secagg", Byte(1) + task.SerializeAsString());
  Write("signed_task", "unsigned", Byte(0) + SealTask(task, nullptr));
}

void DeviceRequests() {
  v1::FetchTaskRequest req;
  req.set_protocol_version(2);
  req.set_device_id("ward3-bed-12");
  req.set_wait_ms(5000);
  const std::string bytes = req.SerializeAsString();
  Write("device_request", "one-slice", Byte(0) + bytes);
  Write("device_request", "three-slices", Byte(2) + Byte(3) + Byte(7) + bytes);
  req.set_device_id("not/a valid id");
  Write("device_request", "bad-id", Byte(1) + Byte(1) + req.SerializeAsString());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR (tests/fuzz/corpus)\n", argv[0]);
    return 2;
  }
  g_out = argv[1];
  TensorCodec();
  SecAgg();
  Pki();
  JobSpecs();
  Configs();
  Csv();
  SensorReadings();
  Rules();
  SignedTasks();
  DeviceRequests();
  std::printf("seed corpora written to %s\n", g_out.c_str());
  return 0;
}
