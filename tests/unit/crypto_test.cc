#include <gtest/gtest.h>

#include <set>

#include <sodium.h>

#include <cstring>

#include "crypto/keys.h"
#include "crypto/prg.h"
#include "crypto/random.h"
#include "crypto/shamir.h"

namespace fleet::crypto {
namespace {

TEST(Random, HexIsRightLengthAndDistinct) {
  ASSERT_TRUE(Init());
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    std::string h = RandomHex(8);
    ASSERT_EQ(h.size(), 16u);
    EXPECT_EQ(h.find_first_not_of("0123456789abcdef"), std::string::npos);
    seen.insert(h);
  }
  EXPECT_EQ(seen.size(), 100u);
}

TEST(ConstantTimeEqual, ComparesContentAndLength) {
  ASSERT_TRUE(Init());
  EXPECT_TRUE(ConstantTimeEqual("secret", "secret"));
  EXPECT_FALSE(ConstantTimeEqual("secret", "secreT"));
  EXPECT_FALSE(ConstantTimeEqual("secret", "secret2"));
  EXPECT_TRUE(ConstantTimeEqual("", ""));
}

// Computed by this implementation when the encoding was fixed; changing it breaks old peers.
__extension__ typedef __int128 I128;
__extension__ typedef unsigned __int128 U128;

constexpr char kDeriveKeyRegression[] =
    "b347ff3140e400fd0e82e7f87ec8a2a6068f1401be3eab3362c062a9c420c080";

std::string Unhex(const std::string& hex) {
  std::string out(hex.size() / 2, '\0');
  size_t len = 0;
  EXPECT_EQ(sodium_hex2bin(reinterpret_cast<uint8_t*>(out.data()), out.size(), hex.data(),
                           hex.size(), nullptr, &len, nullptr),
            0);
  out.resize(len);
  return out;
}
std::string Hex(std::string_view bin) {
  std::string out(bin.size() * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), reinterpret_cast<const uint8_t*>(bin.data()), bin.size());
  out.resize(bin.size() * 2);
  return out;
}
Secret32 SecretFromHex(const std::string& hex) {
  Secret32 s;
  std::string b = Unhex(hex);
  std::memcpy(s.data(), b.data(), 32);
  return s;
}
Bytes32 BytesFromHex(const std::string& hex) {
  Bytes32 b;
  EXPECT_TRUE(FromString(Unhex(hex), &b));
  return b;
}

// RFC 7748 section 6.1: Alice and Bob agree on the same X25519 secret; AgreeKey then derives
// the same key on both sides.
TEST(X25519, Rfc7748Vector) {
  ASSERT_TRUE(Init());
  Secret32 a = SecretFromHex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  Secret32 b = SecretFromHex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
  Bytes32 a_pub = BytesFromHex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  Bytes32 b_pub = BytesFromHex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  Bytes32 derived;
  crypto_scalarmult_base(derived.data(), a.data());
  EXPECT_EQ(derived, a_pub);
  uint8_t shared[32];
  ASSERT_EQ(crypto_scalarmult(shared, a.data(), b_pub.data()), 0);
  EXPECT_EQ(Hex(std::string_view(reinterpret_cast<char*>(shared), 32)),
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  auto k1 = AgreeKey(a, a_pub, b_pub, "ctx");
  auto k2 = AgreeKey(b, b_pub, a_pub, "ctx");
  auto k3 = AgreeKey(b, b_pub, a_pub, "other ctx");
  ASSERT_TRUE(k1.ok() && k2.ok() && k3.ok());
  EXPECT_EQ(std::memcmp(k1->data(), k2->data(), 32), 0);
  EXPECT_NE(std::memcmp(k1->data(), k3->data(), 32), 0);
  Bytes32 zero{};  // low-order point
  EXPECT_FALSE(AgreeKey(a, a_pub, zero, "ctx").ok());
}

// RFC 8032 section 7.1, test 1 (empty message).
TEST(Ed25519, Rfc8032Vector) {
  ASSERT_TRUE(Init());
  SigningKey k = SigningKey::FromSeed(
      SecretFromHex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"));
  EXPECT_EQ(Hex(ToString(k.public_key())),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  std::string sig = k.Sign("");
  EXPECT_EQ(Hex(sig),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e"
            "39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
  EXPECT_TRUE(VerifySignature(k.public_key(), "", sig));
  EXPECT_FALSE(VerifySignature(k.public_key(), "x", sig));
  sig[5] ^= 1;
  EXPECT_FALSE(VerifySignature(k.public_key(), "", sig));
  EXPECT_FALSE(VerifySignature(k.public_key(), "", "short"));
}

// draft-irtf-cfrg-xchacha-03 appendix A.3.1, laid out as Seal() does: nonce || ct || tag.
TEST(Aead, XChaChaDraftVector) {
  ASSERT_TRUE(Init());
  Secret32 key = SecretFromHex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
  std::string ad = Unhex("50515253c0c1c2c3c4c5c6c7");
  std::string sealed = Unhex(
      "404142434445464748494a4b4c4d4e4f5051525354555657"
      "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
      "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
      "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
      "21f9664c97637da9768812f615c68b13b52e"
      "c0875924c1c7987947deafd8780acf49");
  auto plain = Open(key, sealed, ad);
  ASSERT_TRUE(plain.ok()) << plain.status().message();
  EXPECT_EQ(*plain,
            "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the "
            "future, sunscreen would be it.");
  std::string tampered = sealed;
  tampered[30] ^= 1;
  EXPECT_FALSE(Open(key, tampered, ad).ok());
  EXPECT_FALSE(Open(key, sealed, "other ad").ok());
  EXPECT_FALSE(Open(key, sealed.substr(0, 20), ad).ok());
  // Round trip with a fresh random nonce each time.
  std::string s1 = Seal(key, "share", "ad"), s2 = Seal(key, "share", "ad");
  EXPECT_NE(s1, s2);
  EXPECT_EQ(*Open(key, s1, "ad"), "share");
}

// RFC 7693 appendix A: BLAKE2b-512("abc"); DeriveKey's encoding is pinned by a regression value.
TEST(Kdf, Blake2bVectorAndDomainSeparation) {
  ASSERT_TRUE(Init());
  uint8_t h[64];
  crypto_generichash(h, 64, reinterpret_cast<const uint8_t*>("abc"), 3, nullptr, 0);
  EXPECT_EQ(Hex(std::string_view(reinterpret_cast<char*>(h), 64)),
            "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d17d87c5392aab792dc252d"
            "5de4533cc9518d38aa8dbf1925ab92386edd4009923");
  Secret32 a = DeriveKey("ctx", {"ab", "c"});
  Secret32 b = DeriveKey("ctx", {"a", "bc"});
  Secret32 c = DeriveKey("ctx2", {"ab", "c"});
  EXPECT_NE(std::memcmp(a.data(), b.data(), 32), 0);
  EXPECT_NE(std::memcmp(a.data(), c.data(), 32), 0);
  EXPECT_EQ(Hex(std::string_view(reinterpret_cast<const char*>(a.data()), 32)),
            kDeriveKeyRegression);
}

// RFC 8439 appendix A.1 test vector 1: ChaCha20 block 0 for the all-zero key and nonce.
TEST(Prg, KeystreamVectorAndMaskArithmetic) {
  ASSERT_TRUE(Init());
  Secret32 zero;
  uint8_t ks[64];
  Keystream(zero, ks, 64);
  EXPECT_EQ(Hex(std::string_view(reinterpret_cast<char*>(ks), 64)),
            "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7da41597c5157488d7724e0"
            "3fb8d84a376a43b8f41518a11cc387b669b2ee6586");
  std::vector<uint32_t> v(10000, 7);
  ApplyMask(zero, MaskSign::kAdd, v.data(), v.size());
  EXPECT_EQ(v[0], 0xade0b876u + 7u);
  // Keystream crosses a 16 KiB chunk boundary consistently with one long call.
  std::vector<uint8_t> longks(v.size() * 4);
  Keystream(zero, longks.data(), longks.size());
  uint32_t w;
  std::memcpy(&w, &longks[4 * 9000], 4);
  EXPECT_EQ(v[9000], w + 7u);
  ApplyMask(zero, MaskSign::kSubtract, v.data(), v.size());
  EXPECT_EQ(v, std::vector<uint32_t>(10000, 7));
  std::vector<uint64_t> v64(5000, 0);
  ApplyMask(zero, MaskSign::kSubtract, v64.data(), v64.size());
  uint64_t w64;
  std::memcpy(&w64, &longks[8 * 4000], 8);
  EXPECT_EQ(v64[4000], uint64_t{0} - w64);
  std::vector<double> u(1000);
  UniformDoubles(zero, u.data(), u.size());
  for (double x : u) ASSERT_TRUE(x >= 0 && x < 1);
  // From block 64 on (byte 4096, double 512) the stream continues the same sequence.
  std::vector<double> tail(488);
  UniformDoubles(zero, tail.data(), tail.size(), 64);
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), u.begin() + 512));
  uint64_t raw;
  std::memcpy(&raw, &longks[8 * 600], 8);
  EXPECT_EQ(u[600], static_cast<double>(raw >> 11) * 0x1.0p-53);
}

TEST(Shamir, FieldArithmetic) {
  using namespace internal;
  const uint64_t p = kShamirPrime;
  EXPECT_EQ(FieldAdd(p - 1, 1), 0u);
  EXPECT_EQ(FieldSub(0, 1), p - 1);
  EXPECT_EQ(FieldMul(p - 1, p - 1), 1u);  // (-1)^2
  EXPECT_EQ(FieldMul(uint64_t{1} << 60, 2), 1u);  // 2^61 = 1 mod p
  for (uint64_t a : {uint64_t{2}, uint64_t{12345}, p - 2, uint64_t{1} << 40}) {
    EXPECT_EQ(FieldMul(a, FieldInv(a)), 1u) << a;
  }
}

// Shares are evaluations of the polynomial with the injected coefficients, checked against an
// independent I128 evaluation.
TEST(Shamir, KnownAnswerAndReconstruction) {
  ASSERT_TRUE(Init());
  Secret32 secret = SecretFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
  Secret32 coeff_seed = SecretFromHex("abababababababababababababababababababababababababababababababab");
  auto shares = ShamirSplit(secret, {1, 2, 3, 4, 5}, 3, &coeff_seed);
  ASSERT_TRUE(shares.ok());
  auto again = ShamirSplit(secret, {1, 2, 3, 4, 5}, 3, &coeff_seed);
  EXPECT_EQ(EncodeShare((*shares)[4]), EncodeShare((*again)[4]));
  // Chunk 0 is bytes 00..06 little-endian; y(x) = c0 + a1 x + a2 x^2 for the same a1, a2 at all x.
  const U128 p = kShamirPrime;
  uint64_t c0 = 0x06050403020100ull;
  uint64_t y1 = (*shares)[0].y[0], y2 = (*shares)[1].y[0], y3 = (*shares)[2].y[0];
  // Solve a1, a2 from y1, y2 then predict y3 and y5 independently.
  auto mod = [&](I128 v) { v %= static_cast<I128>(p); return static_cast<uint64_t>(v < 0 ? v + p : v); };
  uint64_t d1 = mod(static_cast<I128>(y1) - c0);          // a1 + a2
  uint64_t d2 = mod(static_cast<I128>(y2) - c0);          // 2 a1 + 4 a2
  uint64_t a2 = mod((static_cast<I128>(d2) - 2 * static_cast<I128>(d1)) *
                    static_cast<I128>(internal::FieldInv(2)) % static_cast<I128>(p));
  uint64_t a1 = mod(static_cast<I128>(d1) - a2);
  EXPECT_EQ(y3, mod((static_cast<I128>(c0) + 3 * static_cast<I128>(a1) +
                     (9 * static_cast<U128>(a2)) % p) % p));
  // Any 3 shares reconstruct; 2 do not.
  std::vector<ShamirShare> pick = {(*shares)[4], (*shares)[1], (*shares)[2]};
  auto back = ShamirReconstruct(pick, 3);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(std::memcmp(back->data(), secret.data(), 32), 0);
  EXPECT_FALSE(ShamirReconstruct({(*shares)[0], (*shares)[1]}, 3).ok());
  // A forged share makes the result inconsistent (chunk out of range) or wrong, never silent.
  pick[0].y[0] = internal::FieldAdd(pick[0].y[0], 1);
  auto forged = ShamirReconstruct(pick, 3);
  EXPECT_TRUE(!forged.ok() || std::memcmp(forged->data(), secret.data(), 32) != 0);
  // Repeated x.
  EXPECT_FALSE(ShamirReconstruct({(*shares)[0], (*shares)[0], (*shares)[1]}, 3).ok());
  EXPECT_FALSE(ShamirSplit(secret, {1, 1, 2}, 2).ok());
  EXPECT_FALSE(ShamirSplit(secret, {0, 1, 2}, 2).ok());
  EXPECT_FALSE(ShamirSplit(secret, {1, 2}, 3).ok());
}

TEST(Shamir, EncodingRoundTripAndValidation) {
  ASSERT_TRUE(Init());
  Secret32 secret;
  randombytes_buf(secret.data(), 32);
  auto shares = ShamirSplit(secret, {7, 9}, 2);
  ASSERT_TRUE(shares.ok());
  std::string enc = EncodeShare((*shares)[1]);
  ASSERT_EQ(enc.size(), kShamirShareBytes);
  auto dec = DecodeShare(enc);
  ASSERT_TRUE(dec.ok());
  EXPECT_EQ(dec->x, 9u);
  EXPECT_EQ(dec->y, (*shares)[1].y);
  EXPECT_FALSE(DecodeShare(enc.substr(1)).ok());
  std::string bad = enc;
  for (int i = 4; i < 12; ++i) bad[i] = '\xff';
  EXPECT_FALSE(DecodeShare(bad).ok());
  auto back = ShamirReconstruct({*DecodeShare(EncodeShare((*shares)[0])), *dec}, 2);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(std::memcmp(back->data(), secret.data(), 32), 0);
}

}  // namespace
}  // namespace fleet::crypto

namespace fleet::crypto {
namespace {

TEST(Hex, KeyFilesRoundTripAndMalformedOnesAreRefused) {
  Bytes32 key;
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(i * 7);
  const std::string hex = ToHex(key.data(), key.size());
  EXPECT_EQ(hex.size(), 64u);
  EXPECT_EQ(hex.substr(0, 8), "00070e15");
  Bytes32 back{};
  EXPECT_TRUE(FromHex(hex + "\n", back.data(), back.size()));
  EXPECT_EQ(back, key);
  EXPECT_TRUE(FromHex(hex + "\r\n", back.data(), back.size()));
  EXPECT_FALSE(FromHex(hex.substr(2), back.data(), back.size())) << "too short";
  EXPECT_FALSE(FromHex(hex + "00", back.data(), back.size())) << "too long";
  EXPECT_FALSE(FromHex("zz" + hex.substr(2), back.data(), back.size())) << "not hex";
  EXPECT_FALSE(FromHex(hex + " \n", back.data(), back.size())) << "only a newline may trail";
}

}  // namespace
}  // namespace fleet::crypto
