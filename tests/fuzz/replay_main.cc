// The main() of a fuzz target built without libFuzzer (the normal gcc build): feeds every file
// of the directories (or files) on the command line to LLVMFuzzerTestOneInput once, in name
// order, so ctest replays each target's seed corpus and its regression inputs. A crash or a
// failed FUZZ_CHECK aborts; an argument that names nothing, or no input at all, fails too.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace {

bool IsDir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool IsFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize != nullptr) LLVMFuzzerInitialize(&argc, &argv);
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (IsFile(arg)) {
      files.push_back(arg);
      continue;
    }
    DIR* dir = IsDir(arg) ? ::opendir(arg.c_str()) : nullptr;
    if (dir == nullptr) {
      std::fprintf(stderr, "replay: %s is neither a file nor a directory\n", arg.c_str());
      return 1;
    }
    std::vector<std::string> in_dir;
    while (const dirent* e = ::readdir(dir)) {
      const std::string path = arg + "/" + e->d_name;
      if (e->d_name[0] != '.' && IsFile(path)) in_dir.push_back(path);
    }
    ::closedir(dir);
    std::sort(in_dir.begin(), in_dir.end());
    files.insert(files.end(), in_dir.begin(), in_dir.end());
  }
  if (files.empty()) {
    std::fprintf(stderr, "replay: no inputs (give corpus directories or files)\n");
    return 1;
  }
  for (const std::string& path : files) {
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) {
      std::fprintf(stderr, "replay: cannot read %s\n", path.c_str());
      return 1;
    }
    // A copy of its own, like libFuzzer's, so reads past the end are caught by ASan builds.
    std::vector<uint8_t> copy(bytes.begin(), bytes.end());
    LLVMFuzzerTestOneInput(copy.data(), copy.size());
  }
  std::printf("replay: %zu inputs, no crash\n", files.size());
  return 0;
}
