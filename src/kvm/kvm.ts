import * as libc from '../sys/libc.js';
import { SysError, ENOENT, EACCES, EPERM } from '../sys/errors.js';
import { CAP, KVM } from '../sys/kvm-api.js';
import { cpuidBuffer, decodeCpuid, encodeCpuid, type CpuidEntry } from '../sys/kvm-structs.js';
import { KvmUnavailableError } from './errors.js';
import { parkFd } from './fds.js';
import { Vm } from './vm.js';

export const KVM_DEVICE = '/dev/kvm';
const CPUID_PMU_LEAF = 0xa;

/** The KVM subsystem, opened once per thread that creates VMs. */
export class Kvm {
  readonly fd: number;
  readonly vcpuMmapSize: number;
  private cpuid: Uint8Array | undefined;

  private constructor(fd: number) {
    this.fd = fd;
    try {
      const api = libc.ioctl(fd, KVM.GET_API_VERSION, 0, 'KVM_GET_API_VERSION');
      if (api !== 12) throw new KvmUnavailableError(`${KVM_DEVICE} speaks KVM API ${api}`, 'LightVM needs API 12');
      for (const [name, cap] of [['READONLY_MEM', CAP.READONLY_MEM], ['USER_MEMORY', CAP.USER_MEMORY]] as const) {
        if (this.check(cap) <= 0) {
          throw new KvmUnavailableError(`KVM lacks KVM_CAP_${name}`, 'use a Linux kernel with full KVM support');
        }
      }
      this.vcpuMmapSize = libc.ioctl(fd, KVM.GET_VCPU_MMAP_SIZE, 0, 'KVM_GET_VCPU_MMAP_SIZE');
    } catch (err) {
      libc.close(fd);
      throw err;
    }
  }

  /** Opens /dev/kvm, turning the usual failures into one clear sentence. */
  static open(device = KVM_DEVICE): Kvm {
    let fd: number;
    try {
      fd = libc.open(device, libc.O_RDWR);
    } catch (err) {
      if (err instanceof SysError && err.errno === ENOENT) {
        throw new KvmUnavailableError(
          `${device} does not exist`,
          'load the KVM module (modprobe kvm_intel or kvm_amd) on a host with virtualization enabled',
        );
      }
      if (err instanceof SysError && (err.errno === EACCES || err.errno === EPERM)) {
        throw new KvmUnavailableError(
          `no permission to open ${device}`,
          `add your user to the group that owns it (sudo usermod -aG kvm $USER, then log in again) or run as root`,
        );
      }
      throw err;
    }
    return new Kvm(fd);
  }

  check(cap: number): number {
    return libc.ioctl(this.fd, KVM.CHECK_EXTENSION, cap, 'KVM_CHECK_EXTENSION');
  }

  /** The CPUID leaves KVM supports, read once. */
  supportedCpuid(): CpuidEntry[] {
    return decodeCpuid(this.supportedCpuidBuffer());
  }

  /**
   * KVM_SET_CPUID2 argument: the supported leaves as KVM reports them, but
   * for the performance-monitoring leaf (0xA), left out as Firecracker does:
   * a virtual PMU costs every vCPU kernel memory and creation time, and no
   * guest here uses one.
   */
  supportedCpuidBuffer(): Uint8Array {
    if (!this.cpuid) {
      const buf = cpuidBuffer(256);
      libc.ioctlStruct(this.fd, KVM.GET_SUPPORTED_CPUID, buf, 'KVM_GET_SUPPORTED_CPUID');
      this.cpuid = encodeCpuid(decodeCpuid(buf).filter((e) => e.function !== CPUID_PMU_LEAF));
    }
    return this.cpuid;
  }

  createVm(): Vm {
    const fd = parkFd(libc.ioctl(this.fd, KVM.CREATE_VM, 0, 'KVM_CREATE_VM'), 'vm');
    return new Vm(this, fd);
  }

  close(): void {
    libc.close(this.fd);
  }
}
