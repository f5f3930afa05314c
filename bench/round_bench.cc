// Round benchmark: N simulated devices with no-op training against the real fleet-coordinator
// process over TLS on loopback, D float32 parameters. Reports seconds per round (median of
// rounds 2-10) next to a floor measured in the same run: the raw gRPC transfer of the same bytes
// (model down to N devices, N updates up, same chunking, same TLS) against a server that does no
// FL work. Also the coordinator's peak RSS. Writes one JSON object to stdout.
//
// MODE secure runs the same rounds through SecAgg+ (devices mask a zero update) and also reports
// the protocol bytes each client exchanged beyond the masked update itself. Both modes report the
// CPU each simulated device spent per round (device_cpu_ms_per_round): here all N devices share
// the machine's cores with the coordinator, which a real fleet does not.
//
// usage: round_bench COORDINATOR_BIN N D [plain|secure]
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sodium.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "aggregation/quantize.h"
#include "aggregation/secagg_client.h"
#include "common/grpc_util.h"
#include "common/job_spec.h"
#include "common/model_layout.h"
#include "common/tensor_codec.h"
#include "coordinator/authority.h"
#include "crypto/pki.h"
#include "crypto/random.h"
#include "proto/fleet.grpc.pb.h"

extern char** environ;
using namespace fleet;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kChunk = 1 << 20;
constexpr int kRounds = 10;

std::string ReadAll(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// mTLS identities: device certificates issued straight from the CA `fleet-coordinator init`
// made (the bench is the fleet operator here), each certifying the device's SecAgg signing key,
// and the admin certificate.
struct Identity {
  std::string cert, key;
  std::shared_ptr<crypto::SigningKey> secagg;  // devices only
};

Identity DeviceIdentity(const Authority& ca, const std::string& id) {
  Identity out;
  out.key = *crypto::GenerateP256Key();
  out.secagg = std::make_shared<crypto::SigningKey>(crypto::SigningKey::Generate());
  auto csr =
      crypto::ParseCsr(*crypto::MakeCsr(out.key, id, crypto::ToString(out.secagg->public_key())));
  out.cert = *ca.IssueDeviceCertificate(*csr, id, static_cast<int64_t>(std::time(nullptr)), 86400);
  return out;
}

std::shared_ptr<grpc::Channel> Channel(const std::string& addr, const std::string& pki,
                                       const Identity& who, int i) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  args.SetMaxSendMessageSize(256 << 20);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection per device
  args.SetInt("fleet.bench.device", i);
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadAll(pki + "/ca.pem");
  ssl.pem_cert_chain = who.cert;
  ssl.pem_private_key = who.key;
  return grpc::CreateCustomChannel(addr, grpc::SslCredentials(ssl), args);
}

grpc::Status Push(v1::Device::Stub* stub, const v1::UpdateHeader& header, const std::string& data) {
  grpc::ClientContext ctx;
  v1::PushUpdateResponse resp;
  auto w = stub->PushUpdate(&ctx, &resp);
  v1::UpdateChunk c;
  *c.mutable_header() = header;
  c.mutable_header()->set_total_bytes(data.size());
  for (size_t off = 0; off < data.size(); off += kChunk) {
    c.set_data(data.data() + off, std::min(kChunk, data.size() - off));
    if (!w->Write(c)) break;
    c.clear_header();
  }
  w->WritesDone();
  return w->Finish();
}

// The floor: a Device service that serves a fixed payload and discards uploads.
class FloorService final : public v1::Device::Service {
 public:
  explicit FloorService(std::string payload) {
    v1::Task task;
    task.set_parameters(std::move(payload));
    task_.set_task(task.SerializeAsString());
  }
  grpc::Status FetchTask(grpc::ServerContext*, const v1::FetchTaskRequest*,
                         v1::SignedTask* t) override {
    *t = task_;
    return grpc::Status::OK;
  }
  grpc::Status PushUpdate(grpc::ServerContext*, grpc::ServerReader<v1::UpdateChunk>* r,
                          v1::PushUpdateResponse* resp) override {
    v1::UpdateChunk c;
    size_t n = 0;
    while (r->Read(&c)) n += c.data().size();
    resp->set_accepted(n > 0);
    return grpc::Status::OK;
  }

 private:
  v1::SignedTask task_;
};

double FloorSecondsPerRound(const std::string& pki, const std::vector<Identity>& ids,
                            const std::string& payload) {
  const int n = static_cast<int>(ids.size());
  FloorService service(payload);
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_root_certs = ReadAll(pki + "/ca.pem");
  ssl.pem_key_cert_pairs.push_back({ReadAll(pki + "/server.key"), ReadAll(pki + "/server.pem")});
  int port = 0;
  grpc::ServerBuilder b;
  b.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(ssl), &port);
  b.RegisterService(&service);
  b.SetMaxReceiveMessageSize(256 << 20);
  b.SetMaxSendMessageSize(256 << 20);
  auto server = b.BuildAndStart();
  std::string addr = "127.0.0.1:" + std::to_string(port);
  std::vector<std::unique_ptr<v1::Device::Stub>> stubs;
  for (int i = 0; i < n; ++i) stubs.push_back(v1::Device::NewStub(Channel(addr, pki, ids[i], i)));
  std::vector<double> rounds;
  for (int r = 0; r < kRounds; ++r) {
    auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([&, i] {
        grpc::ClientContext ctx;
        v1::SignedTask st;
        stubs[i]->FetchTask(&ctx, v1::FetchTaskRequest(), &st);
        v1::Task t;
        t.ParseFromString(st.task());
        v1::UpdateHeader h;
        Push(stubs[i].get(), h, t.parameters());
      });
    }
    for (auto& t : threads) t.join();
    rounds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  server->Shutdown();
  rounds.erase(rounds.begin());  // first round includes connection setup, as below
  return Median(rounds);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::fprintf(stderr, "usage: round_bench COORDINATOR_BIN N D [plain|secure]\n");
    return 2;
  }
  const bool secure = argc == 5 && std::string(argv[4]) == "secure";
  if (!crypto::Init() || !RequireTls13().ok()) return 1;
  std::atomic<uint64_t> protocol_bytes{0};
  std::atomic<uint64_t> device_cpu_ns{0};  // CPU the simulated devices spent on their tasks
  const std::string bin = argv[1];
  const int n = std::atoi(argv[2]);
  const size_t d = static_cast<size_t>(std::atof(argv[3]));
  // A single linear layer with 2 outputs: 2*in + 2 = d parameters.
  v1::JobSpec spec;
  spec.set_name("bench");
  spec.set_dataset("bench");
  auto* m = spec.mutable_model();
  m->set_type("mlp");
  m->set_task("classification");
  m->set_input_dim(static_cast<uint32_t>(d / 2 - 1));
  m->set_output_dim(2);
  m->set_activation("relu");
  auto* t = spec.mutable_train();
  t->set_local_epochs(1);
  t->set_batch_size(1);
  t->set_learning_rate(0.1f);
  t->set_optimizer("sgd");
  spec.mutable_strategy()->set_name("fedavg");
  spec.set_rounds(kRounds);
  spec.set_min_clients(n);
  spec.set_target_clients(n);
  spec.set_round_deadline_s(120);
  spec.set_eval_deadline_s(5);
  spec.set_seed(1);
  *spec.mutable_secure_aggregation() = SecureAggregationDefaults();
  spec.mutable_secure_aggregation()->set_disabled(!secure);
  ModelLayout layout = *LayoutFor(*m);
  std::vector<float> params = InitialParameters(layout, 1);
  std::string payload = EncodeParameters(layout, params.data());
  const std::vector<float> zero_update(layout.total, 0.0f);  // what no-op training sends

  // The real coordinator, as a separate process.
  char state[] = "/tmp/fleet-bench.XXXXXX";
  std::string dir = mkdtemp(state);
  const std::string pki = dir + "/pki";
  if (std::system((bin + " init --state-dir " + dir + " >/dev/null").c_str()) != 0) return 1;
  std::vector<Identity> ids;
  {
    auto ca = Authority::Load(dir);
    if (!ca.ok()) return 1;
    for (int i = 0; i < n; ++i) ids.push_back(DeviceIdentity(**ca, "bench-" + std::to_string(i)));
  }
  const char* log_level = getenv("FLEET_BENCH_LOG");  // e.g. debug: per-stage SecAgg+ timings
  std::vector<std::string> args{bin, "--listen", "127.0.0.1:0", "--port-file", dir + "/port",
                                "--state-dir", dir, "--log-level", log_level ? log_level : "warn",
                                "--max-message-mb", "256"};
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  pid_t pid = 0;
  posix_spawn(&pid, cargs[0], nullptr, nullptr, cargs.data(), environ);
  for (int i = 0; i < 200 && ReadAll(dir + "/port").empty(); ++i) usleep(50000);
  std::string addr = "127.0.0.1:" + std::to_string(std::atoi(ReadAll(dir + "/port").c_str()));

  std::atomic<bool> done{false};
  std::vector<std::thread> devices;
  for (int i = 0; i < n; ++i) {
    devices.emplace_back([&, i] {
      auto stub = v1::Device::NewStub(Channel(addr, pki, ids[i], i));
      std::string id = "bench-" + std::to_string(i);
      const crypto::SigningKey& key = *ids[i].secagg;
      // Each device checks its neighbours' certificates, keeping its cache across rounds.
      auto verifier =
          std::move(crypto::CertificateVerifier::Create(ReadAll(pki + "/ca.pem"))).value();
      v1::JoinRequest jr;
      jr.set_signing_public_key(crypto::ToString(key.public_key()));
      jr.set_protocol_version(kProtocolVersion);
      jr.set_device_id(id);
      auto* ds = jr.add_datasets();
      ds->set_name("bench");
      ds->set_train_examples(1);
      {
        grpc::ClientContext ctx;
        v1::JoinResponse resp;
        stub->Join(&ctx, jr, &resp);
      }
      while (!done) {
        grpc::ClientContext ctx;
        v1::FetchTaskRequest fr;
        fr.set_protocol_version(kProtocolVersion);
        fr.set_device_id(id);
        fr.set_wait_ms(500);
        // Like fleet-sim, these devices parse the signed bytes without verifying them (real
        // devices verify; here only the coordinator's cost is measured).
        v1::SignedTask signed_task;
        v1::Task task;
        if (!stub->FetchTask(&ctx, fr, &signed_task).ok() ||
            !task.ParseFromString(signed_task.task()) || task.kind() != v1::Task::TRAIN) {
          continue;
        }
        const double cpu_start = ThreadCpuSeconds();
        struct CpuCharge {  // charged however the task ends
          std::atomic<uint64_t>* total;
          double start;
          ~CpuCharge() { *total += static_cast<uint64_t>((ThreadCpuSeconds() - start) * 1e9); }
        } charge{&device_cpu_ns, cpu_start};
        v1::UpdateHeader h;  // no-op training: send the model back
        h.set_protocol_version(kProtocolVersion);
        h.set_device_id(id);
        h.set_job_id(task.job_id());
        h.set_round(task.round());
        if (!task.has_secagg()) {
          h.set_num_examples(1);
          Push(stub.get(), h, task.parameters());
          continue;
        }
        const size_t length = layout.total + kSecAggExtraElements;
        SecAggClient::Options so{task.job_id(), task.round(), id, task.secagg(), length};
        so.verifier = verifier.get();
        so.now = static_cast<int64_t>(std::time(nullptr));
        SecAggClient sc(std::move(so), &key);
        SecAggTransport transport;
        transport.step = [&](v1::SecAggRequest req) -> StatusOr<v1::SecAggResponse> {
          req.set_protocol_version(kProtocolVersion);
          req.set_device_id(id);
          req.set_job_id(task.job_id());
          req.set_round(task.round());
          grpc::ClientContext sctx;
          v1::SecAggResponse resp;
          grpc::Status gs = stub->SecAgg(&sctx, req, &resp);
          protocol_bytes += req.ByteSizeLong() + resp.ByteSizeLong();
          if (!gs.ok()) return FromGrpcStatus(gs);
          return resp;
        };
        transport.input = [&]() -> StatusOr<std::string> {
          QuantizationSpec q{task.secagg().clip(), task.secagg().value_bits(),
                             task.secagg().max_weight(), task.secagg().modulus_bits()};
          crypto::Secret32 seed;
          randombytes_buf(seed.data(), seed.size());
          return QuantizeToWords(zero_update.data(), zero_update.size(), 1, 0, 0, q, seed);
        };
        transport.send_masked = [&](const std::string& masked) {
          h.set_masked(true);
          return FromGrpcStatus(Push(stub.get(), h, masked));
        };
        Status rs = RunSecAggClient(&sc, transport);
        if (!rs.ok()) std::fprintf(stderr, "%s: %s\n", id.c_str(), rs.message().c_str());
      }
    });
  }
  auto admin = v1::Admin::NewStub(
      Channel(addr, pki, {ReadAll(pki + "/admin.pem"), ReadAll(pki + "/admin.key"), nullptr}, -1));
  v1::JobStatus job;
  {
    grpc::ClientContext ctx;
    v1::SubmitJobRequest req;
    *req.mutable_spec() = spec;
    grpc::Status s = admin->SubmitJob(&ctx, req, &job);
    if (!s.ok()) {
      std::fprintf(stderr, "submit: %s\n", s.error_message().c_str());
      return 1;
    }
  }
  v1::JobStatus st;
  for (;;) {
    grpc::ClientContext ctx;
    v1::GetJobRequest g;
    g.set_id(job.id());
    admin->GetJob(&ctx, g, &st);
    if (st.state() == v1::JobStatus::SUCCEEDED || st.state() == v1::JobStatus::FAILED) break;
    usleep(100000);
  }
  done = true;
  for (auto& th : devices) th.join();
  std::string status = ReadAll("/proc/" + std::to_string(pid) + "/status");
  double rss_mb = 0;
  auto pos = status.find("VmHWM:");
  if (pos != std::string::npos) rss_mb = std::atof(status.c_str() + pos + 6) / 1024.0;
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  if (st.state() != v1::JobStatus::SUCCEEDED) {
    std::fprintf(stderr, "bench job failed: %s\n", st.error().c_str());
    return 1;
  }
  std::vector<double> per_round;
  for (int i = 1; i < st.rounds_size(); ++i) per_round.push_back(st.rounds(i).duration_s());
  double s_per_round = Median(per_round);
  double floor = FloorSecondsPerRound(pki, ids, payload);
  std::system(("rm -rf '" + dir + "'").c_str());
  double proto_bytes = static_cast<double>(protocol_bytes) / (n * st.rounds_size());
  double device_cpu_ms = static_cast<double>(device_cpu_ns) / 1e6 / (n * st.rounds_size());
  std::printf("{\"mode\": \"%s\", \"n\": %d, \"d\": %zu, \"s_per_round\": %.4f, "
              "\"floor_s_per_round\": %.4f, \"ratio_to_floor\": %.2f, "
              "\"coordinator_peak_rss_mb\": %.1f, \"protocol_bytes_per_client\": %.0f, "
              "\"device_cpu_ms_per_round\": %.2f, \"secagg_k\": %u, \"secagg_t\": %u}\n",
              secure ? "secure" : "plain", n, layout.total, s_per_round, floor,
              floor > 0 ? s_per_round / floor : 0, rss_mb, proto_bytes, device_cpu_ms,
              st.rounds(0).secagg_neighbours(), st.rounds(0).secagg_threshold());
  return 0;
}
