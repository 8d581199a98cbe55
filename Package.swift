// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "haven",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "HavenCore", targets: ["HavenCore"]),
        .executable(name: "haven", targets: ["haven"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .target(name: "CHavenShims"),
        .target(
            name: "HavenCore",
            dependencies: [
                "CZstd",
                "CHavenShims",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        .executableTarget(
            name: "haven",
            dependencies: [
                "HavenCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(name: "HavenTestSupport", dependencies: ["HavenCore"]),
        .testTarget(name: "HavenCoreTests", dependencies: ["HavenCore", "HavenTestSupport"]),
        .testTarget(name: "HavenCLITests", dependencies: ["HavenCore", "HavenTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
